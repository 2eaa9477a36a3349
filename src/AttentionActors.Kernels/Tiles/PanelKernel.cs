using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tiles;

/// <summary>
/// One query panel (≤ 256 rows of one batch·head) against a contiguous range of key blocks.
/// For each block (keys pre-transposed in a <see cref="KeyPack"/>): 1. S = score(Q_tile, K_block) for
/// every register tile of rows, one chunk of key columns at a time, 2. logits, mask and m per row,
/// 3. P and l per row, 4. O = P·V for every tile, one chunk of value columns at a time, 5. push the
/// block's partial as a tree leaf and merge it with its left sibling while one is on the stack. The
/// stack ends holding the maximal aligned subtrees of the range, the same nodes (and bits) any shard
/// plan produces.
/// </summary>
internal static class PanelKernel<TL, TV>
    where TL : ILanes<TV>
    where TV : unmanaged
{
    private const int Mr = PanelKernelShape.TileRows;

    private static bool WideTiles => PanelKernelShape.WideTiles;

    /// <summary>
    /// Rows of the register tile that starts with <paramref name="remaining"/> rows left: with 32
    /// vector registers 6 (6×4 tiles), and the last ≤ 8 rows as one tile (an 8-row one is 8×2, so
    /// 128 rows are 20 tiles of 6 and one of 8, not 21 and a 2-row tail of single-row kernels);
    /// else 4.
    /// </summary>
    private static int TileHeight(bool wide, int remaining)
        => !wide ? Math.Min(Mr, remaining) : remaining <= PanelKernelShape.MaxTileRows ? remaining : PanelKernelShape.WideTileRows;

    /// <summary>
    /// Runs the panel and returns how many nodes it left on <paramref name="ws"/>'s stack. With
    /// <paramref name="headRows"/> below <paramref name="rows"/>, the panel stacks query heads of one
    /// K/V group: row r is query <c>rowStart + r mod headRows</c> of head <c>h + r / headRows</c>
    /// (their Q rows are adjacent when the heads' rows are whole). Every element is computed as for
    /// its own head's panel, so stacking changes which rows share a tile, never a bit.
    /// </summary>
    /// <remarks>
    /// Without <paramref name="keys"/> this panel is the only reader of its keys (a decoding step):
    /// it packs each chunk of a block's key columns just before scoring it, into the workspace where
    /// it stays in L1, and asks the next block's keys into L2 (from K itself) while this block
    /// computes. So reading K from memory overlaps the arithmetic instead of preceding all of it,
    /// which is what bounds a decoding step. The packed values, and so the bits, are the same.
    /// When the problem's keys and values are in a key/value cache (<see cref="AttentionProblem.Cache"/>)
    /// they come from its blocks, already in 64-column chunks: nothing is packed and nothing asked ahead.
    /// </remarks>
    public static int Run(AttentionProblem p, Workspace ws, KeyPack? keys, int b, int h, int rowStart, int rows, int blockStart, int blockEnd, int headRows = 0)
    {
        var cache = p.Cache;
        headRows = headRows <= 0 ? rows : headRows;
        int kvh = h / p.GroupSize;
        int dv = p.ValueDim;
        bool entropy = p.Options.Entropy;
        bool packAsItGoes = keys is null && cache is null;
        int depth = keys?.Depth ?? KeyPack.FeatureDepth(p);
        Span<RowModifiers> mods = stackalloc RowModifiers[(rows + headRows - 1) / headRows];
        for (int g = 0; g < mods.Length; g++)
        {
            mods[g] = Modifiers(p, b, h + g);
        }

        ref float q = ref PrepareQueries(p, ws, b, h, rowStart, rows, depth, out nint qStride, headRows);
        for (int r = 0; r < rows; r++)
        {
            (ws.RowLo[r], ws.RowHi[r]) = p.VisibleKeys(b, rowStart + (r % headRows));
        }

        var vData = p.V.Data.Span;

        // Packing as it goes: one chunk of 4 vectors of key columns, rows padded as a pack's are.
        int chunk = 4 * TL.Count;
        if (cache is not null && KeyValueCache.Chunk % chunk != 0)
        {
            throw new InvalidOperationException($"a key/value cache's chunks of {KeyValueCache.Chunk} keys are not whole tiles of {chunk} columns");
        }

        int chunkStride = KeyPack.RowStrideFor(chunk);
        var columns = packAsItGoes ? ws.KeyColumns(depth * chunkStride) : default;

        // Read once: the rows must advance by the heights their tiles were cut with, even if the shape changes meanwhile.
        bool wide = WideTiles;
        int nodes = 0;
        for (int kb = blockStart; kb < blockEnd; kb++)
        {
            int j0 = kb * p.BlockSize;
            int n = Math.Min(p.BlockSize, p.KeySeq - j0);
            int bp = (n + 15) & ~15;
            int slot = nodes;
            if (!NarrowToBlock(p, ws, b, h, rowStart, 0, rows, j0, n, headRows))
            {
                FillIdentity(ws, slot, 0, rows);
            }
            else
            {
                // Column c of the block's packed keys is kt[k·ldk + c]; packing as it goes, the chunk
                // from c0 sits at the start of the workspace's columns instead (kt moves with c0).
                // From a key/value cache, chunk t of 64 key columns is a [depth, 64] matrix of its own
                // (kt moves with t below) and so is chunk u of 64 value columns, [BlockSize, 64].
                ref float kt = ref cache is not null ? ref cache.Block(b, kvh, kb)
                    : ref packAsItGoes ? ref MemoryMarshal.GetReference(columns) : ref keys!.Data[keys.Offset(kb)];
                int ldk = cache is not null ? KeyValueCache.Chunk : packAsItGoes ? chunkStride : keys!.RowStride;

                // Values from the pack's copy (rows ldv apart) when it has one, else from V.
                bool copied = keys is { HasValues: true };
                int ldv = cache is not null ? KeyValueCache.Chunk : copied ? keys!.ValueRowStride : dv;
                ref float v = ref cache is not null ? ref Unsafe.Add(ref kt, cache.ValuesStart)
                    : ref copied ? ref keys!.Data[keys.ValueOffset(kb)] : ref Unsafe.Add(ref MemoryMarshal.GetReference(vData), (nint)p.V.RowOffset(b, kvh, j0));
                var tiles = CutTiles(ws, slot, rows, n, wide);

                // The next block's keys and values are asked into L2 while this block computes, so they
                // arrive before the next block's first tile reads them: its packed keys, or when the
                // panel packs as it goes, its rows of K. When the panel packs as it goes (a decoding
                // step, reading K and V from memory), its 6×4 tiles ask for them a line every second
                // step and its 4×4 tiles a line every step: bursts between tile calls fill the core's
                // miss buffers and stall it. Calls that take no lines that way ask for a share after
                // they return.
                // A cache is read in address order, which the hardware prefetchers follow on their own;
                // asking for lines as well measured slower (21 against 19 GB/s on one thread).
                int nextN = cache is null && kb + 1 < blockEnd ? Math.Min(p.BlockSize, p.KeySeq - j0 - p.BlockSize) : 0;
                ref float nextK = ref nextN <= 0 ? ref kt
                    : ref packAsItGoes ? ref Unsafe.Add(ref MemoryMarshal.GetReference(p.K.Data.Span), (nint)p.K.RowOffset(b, kvh, j0 + p.BlockSize))
                    : ref keys!.Data[keys.Offset(kb + 1)];
                ref float nextV = ref Unsafe.Add(ref v, nextN > 0 ? p.BlockSize * ldv : 0);
                int linesK = nextN <= 0 ? 0 : packAsItGoes ? ((nextN * p.KeyDim) + 15) / 16 : keys!.BlockStride / 16;
                int linesV = ((nextN * ldv) + 15) / 16;
                var aheadK = new Ahead(ref nextK, linesK, packAsItGoes && wide);
                var aheadV = new Ahead(ref nextV, linesV, packAsItGoes && wide);
                int quotaK = 1 + (linesK / Math.Max(1, tiles.Length * ((bp + chunk - 1) / chunk)));
                int quotaV = 1 + (linesV / Math.Max(1, tiles.Length * ((dv + chunk - 1) / chunk)));

                // 1. S for every tile, one chunk of key columns at a time: the chunk's packed keys stay
                // in L1 while each tile reads them. Keys [KeyLo, KeyHi) of a tile are visible to some
                // row of it: only those columns are scored (the rest are masked to −∞ below) and only
                // those values are summed (the rest have P = 0 exactly), so the bits do not depend on
                // the tiling.
                for (int c0 = 0; c0 < bp; c0 += chunk)
                {
                    ref float ktc = ref kt;
                    if (packAsItGoes)
                    {
                        KeyPack.PackColumns(p, b, kvh, kb, c0, Math.Min(bp, c0 + chunk), columns, chunkStride);
                        ktc = ref Unsafe.Subtract(ref kt, c0);
                    }
                    else if (cache is not null)
                    {
                        // Column c of chunk t = c / 64 at kt + t·64·depth + k·64 + (c − 64t) = ktc + k·64 + c.
                        ktc = ref Unsafe.Add(ref kt, c0 / KeyValueCache.Chunk * ((KeyValueCache.Chunk * depth) - KeyValueCache.Chunk));
                    }

                    foreach (var t in tiles)
                    {
                        int lo = Math.Max(t.ColumnLo, c0), hi = Math.Min(t.ColumnHi, c0 + chunk);
                        if (lo < hi)
                        {
                            Scores(p, ref Unsafe.Add(ref q, t.Row * qStride), qStride, ref ktc, ldk, ref ws.S[t.Row * bp], t.Rows, depth, bp, lo, hi, ref aheadK);
                        }

                        aheadK.AskAfterCall(quotaK);
                    }
                }

                aheadK.AskRest();

                // 2. logits, mask and m per row. A row that sees every column of its tile and has no
                // modifier but the scale is scaled and maximized in one pass.
                foreach (var t in tiles)
                {
                    for (int row = t.Row; row < t.Row + t.Rows; row++)
                    {
                        int i = rowStart + (row % headRows), stacked = row / headRows;
                        ref float sRow = ref ws.S[row * bp];
                        ref readonly var mod = ref mods[stacked];
                        float m;
                        if (mod.IsScaleOnly && p.Mask is null && ws.BlockLo[row] <= t.ColumnLo && Math.Min(ws.BlockHi[row], n) >= t.ColumnHi)
                        {
                            m = mod.ApplyScale ? TileKernels<TL, TV>.ScaleRowMax(ref sRow, t.ColumnLo, t.ColumnHi, mod.Scale) : TileKernels<TL, TV>.RowMax(ref sRow, t.ColumnLo, t.ColumnHi);
                        }
                        else
                        {
                            TileKernels<TL, TV>.PrepareRow(ref sRow, t.ColumnLo, t.ColumnHi, mod, j0 - i, ws.BlockLo[row], ws.BlockHi[row], n);
                            AddMask(p, ws, b, h + stacked, i, row, j0, ref sRow);
                            m = TileKernels<TL, TV>.RowMax(ref sRow, t.ColumnLo, t.ColumnHi);
                        }

                        ws.StackM[ws.Index(slot, row)] = m;
                    }
                }

                // 3. P = e^(S − m) and l per row, in a pass of its own: no row's exponentials wait
                // for a maximum, so the exponentials of successive rows overlap in the pipeline.
                foreach (var t in tiles)
                {
                    int at0 = ws.Index(slot, t.Row);
                    TileKernels<TL, TV>.ExpRows(ref ws.S[t.Row * bp], ref ws.P[t.Row * bp], bp, t.Rows, t.ColumnLo, t.ColumnHi, ws.StackM.AsSpan(at0, t.Rows), ws.StackL.AsSpan(at0, t.Rows), ws.Lanes16);
                    for (int row = t.Row; entropy && row < t.Row + t.Rows; row++)
                    {
                        // t = Σ_j e^(s_j − m)·s_j, the column after o (a row that sees nothing has m = −∞ and is never read).
                        int at = ws.Index(slot, row);
                        ws.StackO[(at * ws.ValueDim) + dv] = TileKernels<TL, TV>.WeightedLogitSum(ref ws.S[row * bp], ref ws.P[row * bp], t.ColumnLo, t.ColumnHi, ws.Lanes16);
                    }
                }

                // 4. O = P·V for every tile, one chunk of value columns at a time (the chunk's values stay in L1).
                for (int c0 = 0; c0 < dv; c0 += chunk)
                {
                    foreach (var t in tiles)
                    {
                        // From a cache, column c of chunk u = c / 64 at v + u·64·BlockSize + j·64 + (c − 64u).
                        ref float vc = ref cache is null ? ref v : ref Unsafe.Add(ref v, c0 / KeyValueCache.Chunk * ((KeyValueCache.Chunk * p.BlockSize) - KeyValueCache.Chunk));
                        WeightedValues(ws, slot, t, bp, ref vc, ldv, c0, Math.Min(dv, c0 + chunk), ref aheadV);
                        aheadV.AskAfterCall(quotaV);
                    }
                }

                aheadV.AskRest();
            }

            ws.Nodes[nodes++] = new TreeNode(0, kb);
            while (nodes >= 2 && IsLeftSibling(ws.Nodes[nodes - 2], ws.Nodes[nodes - 1]))
            {
                MergeSlots(ws, nodes - 2, nodes - 1, rows);
                var left = ws.Nodes[nodes - 2];
                ws.Nodes[nodes - 2] = new TreeNode(left.Level + 1, left.Index >> 1);
                nodes--;
            }
        }

        return nodes;
    }

    /// <summary>
    /// Cuts rows [0, rows) into register tiles (see <see cref="TileHeight"/>) and returns those with a
    /// row that sees a key of the block (narrowed in <c>ws.BlockLo/BlockHi</c>); the others get the
    /// identity partial in <paramref name="slot"/>.
    /// </summary>
    private static ReadOnlySpan<PanelTile> CutTiles(Workspace ws, int slot, int rows, int n, bool wide)
    {
        int count = 0;
        for (int r0 = 0, mr; r0 < rows; r0 += mr)
        {
            mr = TileHeight(wide, rows - r0);
            if (!AnyVisible(ws, r0, mr))
            {
                FillIdentity(ws, slot, r0, mr);
                continue;
            }

            var (keyLo, keyHi) = TileKeys(ws, r0, mr, n);
            ws.Tiles[count++] = new PanelTile(r0, mr, keyLo, keyHi);
        }

        return ws.Tiles.AsSpan(0, count);
    }

    /// <summary>
    /// The 64-byte lines of the next block still to ask into L2: <c>left</c> of them from
    /// <c>at</c> on. A hint only: it never faults and changes no value (a stale address after
    /// the GC moves the array costs a useless fetch, nothing else).
    /// </summary>
    private unsafe struct Ahead(ref float start, int lines, bool inTiles)
    {
        private nint at = (nint)Unsafe.AsPointer(ref start);
        private int left = lines;
        private bool tileAsked;

        /// <summary>
        /// Hands the lines of the next <paramref name="steps"/> steps of <paramref name="bytesPerStep"/>
        /// to a tile that asks for them itself (see <see cref="TileKernels{TL, TV}.Score6x4"/>):
        /// their start, or 0 when none are left or the tiles do not ask.
        /// </summary>
        public nint ForTile(int steps, int bytesPerStep = TileKernels<TL, TV>.AheadBytesPerStep)
        {
            if (!inTiles || left <= 0)
            {
                return 0;
            }

            nint start = at;
            at += steps * bytesPerStep;
            left -= (steps * bytesPerStep) / 64;
            tileAsked = true;
            return start;
        }

        /// <summary>After a tile call: the next <paramref name="count"/> lines, unless the call took lines through <see cref="ForTile"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void AskAfterCall(int count)
        {
            if (!tileAsked)
            {
                Ask(count);
            }

            tileAsked = false;
        }

        /// <summary>Every line not asked for yet.</summary>
        public void AskRest() => Ask(left);

        private void Ask(int count)
        {
            if (!Sse.IsSupported)
            {
                return;
            }

            // Locals, not the fields: the loop then carries no dependency through memory.
            nint line = at;
            int asked = Math.Max(0, Math.Min(left, count));
            for (int i = 0; i < asked; i++)
            {
                Sse.Prefetch1((void*)(line + (i * 64)));
            }

            at = line + (asked * 64);
            left -= asked;
        }
    }

    /// <summary>The logit modifiers of query head <paramref name="h"/> in batch <paramref name="b"/>.</summary>
    public static RowModifiers Modifiers(AttentionProblem p, int b, int h)
    {
        var o = p.Options;
        return new RowModifiers(o.Score != ScoreFunction.Additive, p.Scale, o.SoftCap ?? 0f, o.AlibiSlope(b, h, p.Heads), (int)p.Geometry.DiagonalOffsetOf(b));
    }

    /// <summary>
    /// The logits of rows [r0, r0 + mr) of a panel (queries from <see cref="PrepareQueries"/>, visible
    /// keys in <c>ws.RowLo/RowHi</c>) against key block <paramref name="kb"/>, the same bits the
    /// attention pass computes: row r's logits land in <c>ws.S[r·bp + c]</c> for block-local columns
    /// c in [cLo, cHi), −∞ where masked. Returns false (and touches nothing) when no row sees the block.
    /// </summary>
    public static bool TileLogits(AttentionProblem p, Workspace ws, ref float q, nint qStride, KeyPack keys, in RowModifiers mods, int b, int h, int rowStart, int r0, int mr, int kb, out int cLo, out int cHi, out int bp)
    {
        int j0 = kb * p.BlockSize;
        int n = Math.Min(p.BlockSize, p.KeySeq - j0);
        bp = (n + 15) & ~15;
        cLo = cHi = 0;
        if (!NarrowToBlock(p, ws, b, h, rowStart, r0, mr, j0, n))
        {
            return false;
        }

        var (keyLo, keyHi) = TileKeys(ws, r0, mr, n);
        cLo = keyLo & ~15;
        cHi = (keyHi + 15) & ~15;
        var none = new Ahead(ref q, 0, false);
        Scores(p, ref Unsafe.Add(ref q, r0 * qStride), qStride, ref keys.Data[keys.Offset(kb)], keys.RowStride, ref ws.S[0], mr, keys.Depth, bp, cLo, cHi, ref none);
        for (int r = 0; r < mr; r++)
        {
            int row = r0 + r;
            TileKernels<TL, TV>.PrepareRow(ref ws.S[r * bp], cLo, cHi, mods, j0 - (rowStart + row), ws.BlockLo[row], ws.BlockHi[row], n);
            AddMask(p, ws, b, h, rowStart + row, row, j0, ref ws.S[r * bp]);
        }

        return true;
    }

    /// <summary>
    /// Folds stack slot <paramref name="right"/> into slot <paramref name="left"/> for every row, with
    /// the bits of <see cref="PartialMath.MergeInto"/>, W rows at a time: m = max(m1, m2), f =
    /// e^(m_small − m_big), l = fma(f, l_small, l_big) and o = fma(f, o_small, o_big). Where one side
    /// is the identity (m_small = −∞, l = 0), f = 0: l = fma(0, 0, l_big) is copied exactly, and for o
    /// the other side is both big and small, so o = fma(0, o_big, o_big) is copied exactly too (a
    /// partial's o is finite and never −0) and the identity's o, which is never written, is never read.
    /// </summary>
    public static void MergeSlots(Workspace ws, int left, int right, int rows)
    {
        int w = TL.Count;
        int r = 0;
        if (w >= 4)
        {
            var k = VectorMath.ExpConstants<TL, TV>.Create();
            var lowest = TL.Splat(float.MinValue);
            for (; r + w <= rows; r += w)
            {
                int a = ws.Index(left, r), c = ws.Index(right, r);
                ref float m1 = ref ws.StackM[a];
                ref float m2 = ref ws.StackM[c];
                ref float l1 = ref ws.StackL[a];
                ref float l2 = ref ws.StackL[c];
                var vm1 = TL.Load(ref m1, 0);
                var vm2 = TL.Load(ref m2, 0);
                var big = TL.Max(vm1, vm2);
                var small = TL.Min(vm1, vm2);
                var f = TL.SelectWhereLess(small, lowest, k.Zero, VectorMath.Exp(TL.Subtract(small, big), k));
                TL.StoreLanes(f, ws.Lanes16);
                for (int i = 0; i < w; i++)
                {
                    MergeRowO(ws, a + i, c + i, Unsafe.Add(ref m1, i), Unsafe.Add(ref m2, i), ws.Lanes16[i]);
                }

                // l per lane: m1 < m2 takes l2 as the big side (an identity's l is 0, so with f = 0 the big l is kept).
                var vl1 = TL.Load(ref l1, 0);
                var vl2 = TL.Load(ref l2, 0);
                var lBig = TL.SelectWhereLess(vm1, vm2, vl2, vl1);
                var lSmall = TL.SelectWhereLess(vm1, vm2, vl1, vl2);
                TL.Store(TL.Fma(f, lSmall, lBig), ref l1, 0);
                TL.Store(big, ref m1, 0);
            }
        }

        for (; r < rows; r++)
        {
            int a = ws.Index(left, r);
            int c = ws.Index(right, r);
            PartialMath.MergeInto(ref ws.StackM[a], ref ws.StackL[a], ws.RowO(left, r), ws.StackM[c], ws.StackL[c], ws.RowO(right, r));
        }
    }

    /// <summary>
    /// o1 = fma(f, o_small, o_big) for stack entries <paramref name="a"/> (left) and
    /// <paramref name="c"/> (right) with maxima m1, m2: the sides are picked by offset arithmetic,
    /// not branches, since which side is bigger is a coin toss per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MergeRowO(Workspace ws, int a, int c, float m1, float m2, float f)
    {
        int dv = ws.ValueDim;
        int swap = -(m1 < m2 ? 1 : 0);
        int same = -(Math.Min(m1, m2) == float.NegativeInfinity ? 1 : 0);
        int delta = (c - a) * dv;
        int big = (a * dv) + (delta & swap);
        int small = (a * dv) + (delta & ~swap);
        small += (big - small) & same;
        ref float o = ref ws.StackO[a * dv];
        ref float oBig = ref ws.StackO[big];
        ref float oSmall = ref ws.StackO[small];
        var vf = TL.Splat(f);
        int w = TL.Count;
        int col = 0;
        for (; col + w <= dv; col += w)
        {
            TL.Store(TL.Fma(vf, TL.Load(ref oSmall, col), TL.Load(ref oBig, col)), ref o, col);
        }

        for (; col < dv; col++)
        {
            Unsafe.Add(ref o, col) = MathF.FusedMultiplyAdd(f, Unsafe.Add(ref oSmall, col), Unsafe.Add(ref oBig, col));
        }
    }

    public static bool IsLeftSibling(TreeNode left, TreeNode right)
        => left.Level == right.Level && (left.Index & 1) == 0 && left.Index + 1 == right.Index;

    /// <summary>
    /// For panel rows [r0, r0 + count) and the block of keys [j0, j0 + n): the block-local keys
    /// [BlockLo, BlockHi) each row sees (its visible keys, narrowed by an explicit mask to the first
    /// and last it does not mask; empty as [0, 0)). Returns whether any of them sees a key. Narrowing
    /// only drops keys that are −∞ anyway, so it changes work, never bits.
    /// </summary>
    private static bool NarrowToBlock(AttentionProblem p, Workspace ws, int b, int h, int rowStart, int r0, int count, int j0, int n, int headRows = int.MaxValue)
    {
        var mask = p.Mask;
        bool any = false;
        for (int r = r0; r < r0 + count; r++)
        {
            int lo = Math.Max(ws.RowLo[r], j0), hi = Math.Min(ws.RowHi[r], j0 + n);
            if (mask is not null && lo < hi)
            {
                (lo, hi) = mask.Allowed(b, h + (r / headRows), rowStart + (r % headRows), lo, hi);
            }

            (ws.BlockLo[r], ws.BlockHi[r]) = lo < hi ? (lo - j0, hi - j0) : (0, 0);
            any |= lo < hi;
        }

        return any;
    }

    /// <summary>s_j += M[b, h, i, j0 + j] over the row's narrowed keys [BlockLo, BlockHi) (one rounding per element, the same at every width).</summary>
    private static void AddMask(AttentionProblem p, Workspace ws, int b, int h, int i, int row, int j0, ref float sRow)
    {
        int lo = ws.BlockLo[row], hi = ws.BlockHi[row];
        if (p.Mask is { } mask && lo < hi)
        {
            var s = MemoryMarshal.CreateSpan(ref Unsafe.Add(ref sRow, lo), hi - lo);
            TensorPrimitives.Add(s, mask.Keys(b, h, i, j0 + lo, hi - lo), s);
        }
    }

    private static bool AnyVisible(Workspace ws, int r0, int count)
    {
        for (int r = r0; r < r0 + count; r++)
        {
            if (ws.BlockLo[r] < ws.BlockHi[r])
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The block-local key range [lo, hi) that any of the tile's rows sees.</summary>
    private static (int Lo, int Hi) TileKeys(Workspace ws, int r0, int count, int n)
    {
        int lo = n, hi = 0;
        for (int r = r0; r < r0 + count; r++)
        {
            if (ws.BlockLo[r] < ws.BlockHi[r])
            {
                lo = Math.Min(lo, ws.BlockLo[r]);
                hi = Math.Max(hi, ws.BlockHi[r]);
            }
        }

        return (lo, hi);
    }

    private static void FillIdentity(Workspace ws, int slot, int r0, int count)
    {
        ws.StackM.AsSpan(ws.Index(slot, r0), count).Fill(float.NegativeInfinity);
        ws.StackL.AsSpan(ws.Index(slot, r0), count).Clear();
    }

    /// <summary>Raw scores of <paramref name="mr"/> query rows against the block's key columns [cLo, cHi): row r's land in <c>s[r·bp + c]</c>.</summary>
    private static void Scores(AttentionProblem p, ref float q, nint qStride, ref float kt, int ldk, ref float s, int mr, int depth, int bp, int cLo, int cHi, ref Ahead ahead)
    {
        if (p.Options.Score == ScoreFunction.Gaussian)
        {
            Scores<DistanceStep>(ref q, qStride, ref kt, ldk, ref s, mr, depth, bp, cLo, cHi, ref ahead);
        }
        else if (p.Options.Score == ScoreFunction.Additive)
        {
            var va = p.Options.Additive!.V;
            int w = TL.Count;
            for (int r = 0; r < mr; r++)
            {
                for (int c = cLo; c < cHi; c += w)
                {
                    TileKernels<TL, TV>.ScoreAdditive1x1(ref Unsafe.Add(ref q, r * qStride), va, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref s, (r * bp) + c));
                }
            }
        }
        else
        {
            Scores<DotStep>(ref q, qStride, ref kt, ldk, ref s, mr, depth, bp, cLo, cHi, ref ahead);
        }
    }

    private static void Scores<TS>(ref float q, nint qStride, ref float kt, int ldk, ref float s, int mr, int depth, int bp, int cLo, int cHi, ref Ahead ahead)
        where TS : struct
    {
        int w = TL.Count;
        int r = 0;
        for (; WideTiles && r + (2 * Mr) <= mr; r += 2 * Mr)
        {
            ref float qr = ref Unsafe.Add(ref q, r * qStride);
            ref float sr = ref Unsafe.Add(ref s, r * bp);
            int c = cLo;
            for (; c + (2 * w) <= cHi; c += 2 * w)
            {
                TileKernels<TL, TV>.Score8x2<TS>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp);
            }

            for (; c < cHi; c += w)
            {
                TileKernels<TL, TV>.Score4x1<TS>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp);
                TileKernels<TL, TV>.Score4x1<TS>(ref Unsafe.Add(ref qr, Mr * qStride), qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, (Mr * bp) + c), bp);
            }
        }

        const int six = PanelKernelShape.WideTileRows;
        for (; WideTiles && r + six <= mr; r += six)
        {
            ref float qr = ref Unsafe.Add(ref q, r * qStride);
            ref float sr = ref Unsafe.Add(ref s, r * bp);
            int c = cLo;
            for (; c + (4 * w) <= cHi; c += 4 * w)
            {
                nint from = ahead.ForTile(depth);
                if (from == 0)
                {
                    TileKernels<TL, TV>.Score6x4<TS, NoLinesAhead>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp, 0);
                }
                else
                {
                    TileKernels<TL, TV>.Score6x4<TS, LinesAhead>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp, from);
                }
            }

            // The last 1–3 key vectors: rows [0, 4) and [2, 6) of the tile as two 4-row tiles (rows 2
            // and 3 are computed twice, to the same bits).
            for (; c < cHi; c += w)
            {
                TileKernels<TL, TV>.Score4x1<TS>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp);
                TileKernels<TL, TV>.Score4x1<TS>(ref Unsafe.Add(ref qr, 2 * qStride), qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, (2 * bp) + c), bp);
            }
        }

        for (; r + Mr <= mr; r += Mr)
        {
            ref float qr = ref Unsafe.Add(ref q, r * qStride);
            ref float sr = ref Unsafe.Add(ref s, r * bp);
            int c = cLo;
            for (; WideTiles && c + (4 * w) <= cHi; c += 4 * w)
            {
                nint from = ahead.ForTile(depth, TileKernels<TL, TV>.AheadBytesPerStep4);
                if (from == 0)
                {
                    TileKernels<TL, TV>.Score4x4<TS, NoLinesAhead>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp, 0);
                }
                else
                {
                    TileKernels<TL, TV>.Score4x4<TS, LinesAhead>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp, from);
                }
            }

            for (; c + (2 * w) <= cHi; c += 2 * w)
            {
                TileKernels<TL, TV>.Score4x2<TS>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp);
            }

            for (; c < cHi; c += w)
            {
                TileKernels<TL, TV>.Score4x1<TS>(ref qr, qStride, depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref sr, c), bp);
            }
        }

        for (; r < mr; r++)
        {
            for (int c = cLo; c < cHi; c += w)
            {
                TileKernels<TL, TV>.Score1x1<TS>(ref Unsafe.Add(ref q, r * qStride), depth, ref Unsafe.Add(ref kt, c), ldk, ref Unsafe.Add(ref s, (r * bp) + c));
            }
        }
    }

    /// <summary>
    /// O[tile rows, c0..c1) = Σ_{KeyLo ≤ j &lt; KeyHi} P[row, j]·V[j, c0..c1) (keys outside have P = 0
    /// for every row of the tile).
    /// </summary>
    private static void WeightedValues(Workspace ws, int slot, PanelTile t, int bp, ref float v, int ldv, int c0, int c1, ref Ahead ahead)
    {
        int w = TL.Count;
        int mr = t.Rows, keyLo = t.KeyLo;
        int n = t.KeyHi - keyLo;
        nint oStride = ws.ValueDim;
        ref float o = ref ws.StackO[ws.Index(slot, t.Row) * ws.ValueDim];
        ref float p = ref ws.P[(t.Row * bp) + keyLo];
        ref float vFirst = ref Unsafe.Add(ref v, keyLo * ldv);
        int r = 0;
        for (; WideTiles && r + (2 * Mr) <= mr; r += 2 * Mr)
        {
            ref float pr = ref Unsafe.Add(ref p, r * bp);
            ref float or = ref Unsafe.Add(ref o, r * oStride);
            int c = c0;
            for (; c + (2 * w) <= c1; c += 2 * w)
            {
                TileKernels<TL, TV>.Pv8x2(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride);
            }

            ValueColumns(ref pr, bp, n, ref vFirst, ldv, ref or, oStride, 2 * Mr, c, c1);
        }

        const int six = PanelKernelShape.WideTileRows;
        for (; WideTiles && r + six <= mr; r += six)
        {
            ref float pr = ref Unsafe.Add(ref p, r * bp);
            ref float or = ref Unsafe.Add(ref o, r * oStride);
            int c = c0;
            for (; c + (4 * w) <= c1; c += 4 * w)
            {
                nint from = ahead.ForTile(n);
                if (from == 0)
                {
                    TileKernels<TL, TV>.Pv6x4<NoLinesAhead>(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride, 0);
                }
                else
                {
                    TileKernels<TL, TV>.Pv6x4<LinesAhead>(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride, from);
                }
            }

            // Two more value vectors: rows [0, 4) and [2, 6) as two 4-row tiles (rows 2 and 3 twice, to the same bits).
            for (; c + (2 * w) <= c1; c += 2 * w)
            {
                TileKernels<TL, TV>.Pv4x2(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride);
                TileKernels<TL, TV>.Pv4x2(ref Unsafe.Add(ref pr, 2 * bp), bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, (2 * oStride) + c), oStride);
            }

            ValueColumns(ref pr, bp, n, ref vFirst, ldv, ref or, oStride, six, c, c1);
        }

        for (; r + Mr <= mr; r += Mr)
        {
            ref float pr = ref Unsafe.Add(ref p, r * bp);
            ref float or = ref Unsafe.Add(ref o, r * oStride);
            int c = c0;
            for (; WideTiles && c + (4 * w) <= c1; c += 4 * w)
            {
                nint from = ahead.ForTile(n, TileKernels<TL, TV>.AheadBytesPerStep4);
                if (from == 0)
                {
                    TileKernels<TL, TV>.Pv4x4<NoLinesAhead>(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride, 0);
                }
                else
                {
                    TileKernels<TL, TV>.Pv4x4<LinesAhead>(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride, from);
                }
            }

            for (; c + (2 * w) <= c1; c += 2 * w)
            {
                TileKernels<TL, TV>.Pv4x2(ref pr, bp, n, ref Unsafe.Add(ref vFirst, c), ldv, ref Unsafe.Add(ref or, c), oStride);
            }

            ValueColumns(ref pr, bp, n, ref vFirst, ldv, ref or, oStride, Mr, c, c1);
        }

        ValueColumns(ref Unsafe.Add(ref p, r * bp), bp, n, ref vFirst, ldv, ref Unsafe.Add(ref o, r * oStride), oStride, mr - r, c0, c1);
    }

    /// <summary>Output columns [c, end) of <paramref name="rows"/> rows, four vectors, then one vector, then one column at a time.</summary>
    private static void ValueColumns(ref float p, int bp, int n, ref float vFirst, int dv, ref float o, nint oStride, int rows, int c, int end)
    {
        int w = TL.Count;

        // Four vectors of a row at a time (a tile of fewer rows than the register tiles': a shard
        // of one decoding row), then one.
        int wide = c + ((end - c) / (4 * w) * 4 * w);
        for (int r = 0; r < rows; r++)
        {
            for (int c4 = c; c4 < wide; c4 += 4 * w)
            {
                TileKernels<TL, TV>.Pv1x4(ref Unsafe.Add(ref p, r * bp), n, ref Unsafe.Add(ref vFirst, c4), dv, ref Unsafe.Add(ref o, (r * oStride) + c4));
            }
        }

        for (c = wide; c + w <= end; c += w)
        {
            for (int r = 0; r < rows; r++)
            {
                TileKernels<TL, TV>.Pv1x1(ref Unsafe.Add(ref p, r * bp), n, ref Unsafe.Add(ref vFirst, c), dv, ref Unsafe.Add(ref o, (r * oStride) + c));
            }
        }

        for (; c < end; c++)
        {
            for (int r = 0; r < rows; r++)
            {
                float acc = 0f;
                for (int j = 0; j < n; j++)
                {
                    acc = MathF.FusedMultiplyAdd(Unsafe.Add(ref p, (r * bp) + j), Unsafe.Add(ref vFirst, (j * dv) + c), acc);
                }

                Unsafe.Add(ref o, (r * oStride) + c) = acc;
            }
        }
    }

    /// <summary>
    /// The query rows the score kernel reads: Q itself, or copies (normalized / projected for the
    /// cosine / additive scores, or gathered when stacked heads' rows are not adjacent in Q).
    /// </summary>
    public static ref float PrepareQueries(AttentionProblem p, Workspace ws, int b, int h, int rowStart, int rows, int depth, out nint stride, int headRows = int.MaxValue)
    {
        var qData = p.Q.Data.Span;
        int dk = p.KeyDim;
        var score = p.Options.Score;
        bool adjacent = headRows >= rows || (rowStart == 0 && headRows == p.QuerySeq && !p.Q.IsWindow);
        if (score is ScoreFunction.Dot or ScoreFunction.Gaussian && adjacent)
        {
            stride = dk;
            return ref Unsafe.Add(ref MemoryMarshal.GetReference(qData), (nint)p.Q.RowOffset(b, h, rowStart));
        }

        stride = depth;
        for (int r = 0; r < rows; r++)
        {
            var query = qData.Slice((int)p.Q.RowOffset(b, h + (r / headRows), rowStart + (r % headRows)), dk);
            var dst = ws.QPanel.AsSpan(r * depth, depth);
            if (score is ScoreFunction.Dot or ScoreFunction.Gaussian)
            {
                query.CopyTo(dst);
            }
            else if (score == ScoreFunction.Cosine)
            {
                float inv = AttentionProblem.CosineInverseNorm(query);
                for (int k = 0; k < dk; k++)
                {
                    dst[k] = query[k] * inv;
                }
            }
            else
            {
                var wq = p.Options.Additive!.Wq;
                for (int a = 0; a < depth; a++)
                {
                    dst[a] = KeyPack.Project(query, wq, a, depth);
                }
            }
        }

        return ref ws.QPanel[0];
    }
}
