using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tiles;

/// <summary>
/// The inspection pass, once every row's log-sum-exp is known. With the attention pass's own
/// logits s (same kernel, same bits) and a_ij = e^(s_ij − lse_i):
/// <code>
/// entropy:  T_i = Σ_j a_ij · s_ij     per key block in 16 lanes (lane t takes j ≡ t mod 16), then
///                                      the blocks summed in the canonical tree;  H_i = lse_i − T_i
/// coverage: c_j = Σ_h Σ_i a_ij         per leaf (one query head × one query block of B rows) rows
///                                      ascending, then the leaves (heads, then query blocks) summed
///                                      in the canonical tree over leaf indices
/// </code>
/// Every sum has a fixed order independent of the SIMD width, the thread count and how rows or
/// blocks are split, so the bits are too. Masked keys have a = 0 and add nothing.
/// </summary>
internal static class InspectKernel<TL, TV>
    where TL : ILanes<TV>
    where TV : unmanaged
{
    private const int Mr = PanelKernelShape.TileRows;

    /// <summary>H_i for rows [rowStart, rowStart + rows) of (b, h) over key blocks [first, end), into <paramref name="entropy"/>.</summary>
    public static void EntropyPanel(AttentionProblem p, Workspace ws, KeyPack keys, ReadOnlySpan<float> lse, int b, int h, int rowStart, int rows, int first, int end, Span<float> entropy)
    {
        var mods = PanelKernel<TL, TV>.Modifiers(p, b, h);
        ref float q = ref PanelKernel<TL, TV>.PrepareQueries(p, ws, b, h, rowStart, rows, keys.Depth, out nint qStride);
        for (int r = 0; r < rows; r++)
        {
            (ws.RowLo[r], ws.RowHi[r]) = p.VisibleKeys(b, rowStart + r);
        }

        // A stack of tree nodes, each holding T per row; a node is folded into its left sibling as
        // soon as both exist, as the attention pass does with its partials.
        int slots = (2 * CanonicalTree.Height(Math.Max(end - first, 1))) + 4;
        var stack = new float[slots * rows];
        var nodes = new TreeNode[slots];
        int count = 0;
        for (int kb = first; kb < end; kb++)
        {
            var leaf = stack.AsSpan(count * rows, rows);
            leaf.Clear();
            for (int r0 = 0; r0 < rows; r0 += Mr)
            {
                int mr = Math.Min(Mr, rows - r0);
                if (!PanelKernel<TL, TV>.TileLogits(p, ws, ref q, qStride, keys, mods, b, h, rowStart, r0, mr, kb, out int cLo, out int cHi, out int bp))
                {
                    continue;
                }

                for (int r = 0; r < mr; r++)
                {
                    float rowLse = lse[rowStart + r0 + r];
                    if (!float.IsNegativeInfinity(rowLse))
                    {
                        leaf[r0 + r] = WeightedLogits(ref ws.S[r * bp], cLo, cHi, rowLse, ws.Lanes16);
                    }
                }
            }

            nodes[count++] = new TreeNode(0, kb);
            while (count >= 2 && PanelKernel<TL, TV>.IsLeftSibling(nodes[count - 2], nodes[count - 1]))
            {
                Fold(stack, rows, count - 2, count - 1);
                nodes[count - 2] = new TreeNode(nodes[count - 2].Level + 1, nodes[count - 2].Index >> 1);
                count--;
            }
        }

        int root = CanonicalTree.Evaluate(p.BlockCount, nodes.AsSpan(0, count), (a, c) =>
        {
            Fold(stack, rows, a, c);
            return a;
        });

        for (int r = 0; r < rows; r++)
        {
            float rowLse = lse[rowStart + r];

            // A row that sees no key has no distribution; its entropy is 0 by convention.
            entropy[rowStart + r] = float.IsNegativeInfinity(rowLse) || root < 0 ? 0f : rowLse - stack[(root * rows) + r];
        }
    }

    /// <summary>
    /// Coverage of key block <paramref name="kb"/> of (b, kvh) over the leaves [leafStart, leafEnd)
    /// (<see cref="CoverageLeaves"/>), folded into the maximal aligned subtrees of that range, left to
    /// right: node n's sums for the block's keys at <c>values[n·bp ..]</c>, bp = keys rounded up to
    /// 16. <paramref name="lseBase"/>(h) gives the index of row 0 of query head h in <paramref name="lse"/>.
    /// Returns the node count.
    /// </summary>
    public static int CoverageNodes(AttentionProblem p, Workspace ws, KeyPack keys, float[] lse, Func<int, long> lseBase, int b, int kvh, int leafStart, int leafEnd, int kb, Span<float> values)
    {
        int j0 = kb * p.BlockSize;
        int bp = (Math.Min(p.BlockSize, p.KeySeq - j0) + 15) & ~15;
        int queryBlocks = CoverageLeaves(p.Geometry) / p.GroupSize;
        Span<TreeNode> nodes = stackalloc TreeNode[(2 * CanonicalTree.Height(Math.Max(leafEnd - leafStart, 1))) + 4];
        int count = 0;
        for (int leaf = leafStart; leaf < leafEnd; leaf++)
        {
            int h = (kvh * p.GroupSize) + (leaf / queryBlocks);
            int rowStart = leaf % queryBlocks * p.BlockSize;
            var sums = values.Slice(count * bp, bp);
            sums.Clear();
            CoverageLeaf(p, ws, keys, lse, lseBase(h), b, h, rowStart, Math.Min(p.BlockSize, p.QuerySeq - rowStart), kb, sums);
            nodes[count++] = new TreeNode(0, leaf);

            // c = c_left + c_right: one rounding per key and fold, in the tree's order.
            while (count >= 2 && PanelKernel<TL, TV>.IsLeftSibling(nodes[count - 2], nodes[count - 1]))
            {
                Add(values.Slice((count - 2) * bp, bp), values.Slice((count - 1) * bp, bp));
                nodes[count - 2] = new TreeNode(nodes[count - 2].Level + 1, nodes[count - 2].Index >> 1);
                count--;
            }
        }

        return count;
    }

    /// <summary>
    /// Leaves of the coverage tree of one key head: leaf L = g·QB + qb is query head kvh·G + g over
    /// the rows of query block qb (QB = ⌈Nq / B⌉ blocks of the key block size B).
    /// </summary>
    public static int CoverageLeaves(AttentionGeometry g) => g.GroupSize * (int)(((long)g.QuerySeq + g.BlockSize - 1) / g.BlockSize);

    /// <summary>left += right, element by element.</summary>
    public static void Add(Span<float> left, ReadOnlySpan<float> right)
    {
        nint w = TL.Count;
        ref float l = ref left[0];
        ref float r = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(right);
        for (nint c = 0; c < left.Length; c += w)
        {
            TL.Store(TL.Add(TL.Load(ref l, c), TL.Load(ref r, c)), ref l, c);
        }
    }

    /// <summary>
    /// One leaf: c_j += e^(s_ij − lse_i) for rows [rowStart, rowStart + rows) of (b, h), ascending,
    /// over the keys of block kb (block-local <paramref name="sums"/>); rows that see none of the
    /// block's keys add nothing.
    /// </summary>
    private static void CoverageLeaf(AttentionProblem p, Workspace ws, KeyPack keys, float[] lse, long lseBase, int b, int h, int rowStart, int rowCount, int kb, Span<float> sums)
    {
        nint w = TL.Count;
        var mods = PanelKernel<TL, TV>.Modifiers(p, b, h);
        for (int panelStart = rowStart; panelStart < rowStart + rowCount; panelStart += PanelKernelShape.PanelRows)
        {
            int rows = Math.Min(PanelKernelShape.PanelRows, rowStart + rowCount - panelStart);
            var (first, end) = p.VisibleBlocks(b, panelStart, rows);
            if (kb < first || kb >= end)
            {
                continue;
            }

            ref float q = ref PanelKernel<TL, TV>.PrepareQueries(p, ws, b, h, panelStart, rows, keys.Depth, out nint qStride);
            for (int r = 0; r < rows; r++)
            {
                (ws.RowLo[r], ws.RowHi[r]) = p.VisibleKeys(b, panelStart + r);
            }

            for (int r0 = 0; r0 < rows; r0 += Mr)
            {
                int mr = Math.Min(Mr, rows - r0);
                if (!PanelKernel<TL, TV>.TileLogits(p, ws, ref q, qStride, keys, mods, b, h, panelStart, r0, mr, kb, out int cLo, out int cHi, out int sp))
                {
                    continue;
                }

                for (int r = 0; r < mr; r++)
                {
                    float rowLse = lse[lseBase + panelStart + r0 + r];
                    if (float.IsNegativeInfinity(rowLse))
                    {
                        continue;
                    }

                    // c_j += e^(s_j − lse): one rounding per element, rows in ascending order.
                    var vl = TL.Splat(rowLse);
                    ref float s = ref ws.S[r * sp];
                    ref float c = ref sums[0];
                    for (nint col = cLo; col < cHi; col += w)
                    {
                        var a = VectorMath.Exp<TL, TV>(TL.Subtract(TL.Load(ref s, col), vl));
                        TL.Store(TL.Add(TL.Load(ref c, col), a), ref c, col);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Σ_j e^(s_j − lse)·s_j over columns [cLo, cHi) of one logit row (masked entries −∞ add
    /// nothing), in 16 lanes and then a fixed pairwise tree over the lanes.
    /// </summary>
    public static float WeightedLogits(ref float s, int cLo, int cHi, float lse, Span<float> lanes16)
    {
        nint w = TL.Count;
        int groups = 16 / TL.Count;
        Span<TV> acc = stackalloc TV[groups];
        acc.Clear();
        var vl = TL.Splat(lse);
        var zero = TL.Splat(0f);
        var lowest = TL.Splat(float.MinValue);
        int g = 0;
        for (nint c = cLo; c < cHi; c += w)
        {
            var x = TL.Load(ref s, c);
            var a = VectorMath.Exp<TL, TV>(TL.Subtract(x, vl));

            // 0 · (−∞) would be NaN: a masked logit counts as 0 (its weight is 0 anyway).
            acc[g] = TL.Fma(a, TL.SelectWhereLess(x, lowest, zero, x), acc[g]);
            g = g + 1 == groups ? 0 : g + 1;
        }

        return TileKernels<TL, TV>.SumLanes(acc, lanes16);
    }

    /// <summary>
    /// Adds the weights a_ij = e^(s_ij − lse_i) of rows [rowStart, rowStart + rows) of (b, h) and keys
    /// [colLo, colHi) into <paramref name="panel"/> (row-major, rows × (colHi − colLo)): one rounding
    /// per element, so summing heads into one panel in a fixed head order gives fixed bits. Masked
    /// (i, j) and rows that see no key add nothing. <paramref name="lse"/> holds the rows' log-sum-exp
    /// from row <paramref name="rowStart"/> on. The queries are prepared once for all the keys' blocks.
    /// </summary>
    public static void WeightsPanel(AttentionProblem p, Workspace ws, KeyPack keys, ReadOnlySpan<float> lse, int b, int h, int rowStart, int rows, int colLo, int colHi, Span<float> panel)
    {
        var mods = PanelKernel<TL, TV>.Modifiers(p, b, h);
        ref float q = ref PanelKernel<TL, TV>.PrepareQueries(p, ws, b, h, rowStart, rows, keys.Depth, out nint qStride);
        for (int r = 0; r < rows; r++)
        {
            (ws.RowLo[r], ws.RowHi[r]) = p.VisibleKeys(b, rowStart + r);
        }

        int cols = colHi - colLo;
        var weights = ws.P.AsSpan(0, (Math.Min(p.BlockSize, p.KeySeq) + 15) & ~15);
        for (int kb = colLo / p.BlockSize; kb <= (colHi - 1) / p.BlockSize; kb++)
        {
            int j0 = kb * p.BlockSize;
            int n = Math.Min(p.BlockSize, p.KeySeq - j0);
            for (int r0 = 0; r0 < rows; r0 += Mr)
            {
                int mr = Math.Min(Mr, rows - r0);
                if (!PanelKernel<TL, TV>.TileLogits(p, ws, ref q, qStride, keys, mods, b, h, rowStart, r0, mr, kb, out int cLo, out int cHi, out int bp))
                {
                    continue;
                }

                // The window's keys of the block, [lo, hi) block-local; exponentials from lo rounded down to a
                // whole vector, which stays inside the tile's [cLo, cHi) (multiples of 16).
                int lo = Math.Max(cLo, colLo - j0), hi = Math.Min(Math.Min(cHi, colHi - j0), n);
                if (lo >= hi)
                {
                    continue;
                }

                for (int r = 0; r < mr; r++)
                {
                    float rowLse = lse[r0 + r];
                    if (float.IsNegativeInfinity(rowLse))
                    {
                        continue;
                    }

                    // a_ij = e^(s_ij − lse_i)
                    var vl = TL.Splat(rowLse);
                    ref float s = ref ws.S[r * bp];
                    for (nint c = lo - (lo % TL.Count); c < hi; c += TL.Count)
                    {
                        TL.Store(VectorMath.Exp<TL, TV>(TL.Subtract(TL.Load(ref s, c), vl)), ref weights[0], c);
                    }

                    var target = panel.Slice(((r0 + r) * cols) + j0 + lo - colLo, hi - lo);
                    System.Numerics.Tensors.TensorPrimitives.Add(target, weights[lo..hi], target);
                }
            }
        }
    }

    private static void Fold(float[] stack, int rows, int left, int right)
    {
        for (int r = 0; r < rows; r++)
        {
            stack[(left * rows) + r] += stack[(right * rows) + r];
        }
    }
}
