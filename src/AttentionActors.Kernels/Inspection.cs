using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>
/// What each query's attention looks like, without the N×N weight matrix: <c>Entropy [B, H, Nq]</c>
/// (H_i = −Σ_j a_ij ln a_ij = lse_i − Σ_j a_ij·s_ij, in nats; 0 for a row that sees no key) and,
/// when asked for, <c>Coverage [B, Hkv, Nk]</c> (c_j = Σ_i a_ij summed over every query head that
/// shares key head Hkv).
/// </summary>
public sealed record InspectionResult(float[] Entropy, float[]? Coverage);

/// <summary>Pooling of weights into heatmap cells.</summary>
public enum WeightPooling
{
    /// <summary>The largest weight in the cell.</summary>
    Max,

    /// <summary>The mean weight over the cell.</summary>
    Mean,
}

/// <summary>
/// The inspection pass over a computed attention (its log-sum-exp): entropy, coverage and windows
/// of the weights a_ij = e^(s_ij − lse_i), from the same logits as the attention pass and in fixed
/// orders, so their bits do not depend on threads or SIMD width.
/// </summary>
public static class Inspection
{
    /// <summary>
    /// Entropy of every row by a second pass over the keys (attention computed with
    /// <see cref="AttentionOptions.Entropy"/> carries it without one) and, if
    /// <paramref name="coverage"/>, the coverage of every key.
    /// </summary>
    public static InspectionResult Compute(AttentionProblem problem, ReadOnlySpan<float> lse, bool coverage, ComputeOptions? settings = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        settings ??= new ComputeOptions();
        CheckLse(problem, lse);
        var lseArray = lse.ToArray();
        var entropy = new float[lseArray.Length];
        int panels = (problem.QuerySeq + PanelKernelShape.PanelRows - 1) / PanelKernelShape.PanelRows;
        using var packs = new Packs(problem);
        ParallelWork.Run(problem.Batch * problem.Heads * panels, settings.Threads, item =>
        {
            int bh = item / panels;
            int b = bh / problem.Heads, h = bh % problem.Heads;
            int rowStart = item % panels * PanelKernelShape.PanelRows;
            int rows = Math.Min(PanelKernelShape.PanelRows, problem.QuerySeq - rowStart);
            Attention.Dispatch(settings.KernelPath, new EntropyJob(problem, packs[(b * problem.KvHeads) + (h / problem.GroupSize)], lseArray, entropy, b, h, rowStart, rows));
        }, cancellationToken);

        return new InspectionResult(entropy, coverage ? Coverage(problem, lseArray, packs, settings, cancellationToken) : null);
    }

    /// <summary>The coverage c_j = Σ_h Σ_i a_ij of every key, [B, Hkv, Nk]: a pass over the key blocks once every row's lse is known.</summary>
    public static float[] Coverage(AttentionProblem problem, ReadOnlySpan<float> lse, ComputeOptions? settings = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        CheckLse(problem, lse);
        using var packs = new Packs(problem);
        return Coverage(problem, lse.ToArray(), packs, settings ?? new ComputeOptions(), cancellationToken);
    }

    private static float[] Coverage(AttentionProblem problem, float[] lse, Packs packs, ComputeOptions settings, CancellationToken cancellationToken)
    {
        var cover = new float[(long)problem.Batch * problem.KvHeads * problem.KeySeq];
        ParallelWork.Run(problem.Batch * problem.KvHeads * problem.BlockCount, settings.Threads, item =>
        {
            int g = item / problem.BlockCount;
            int b = g / problem.KvHeads, kvh = g % problem.KvHeads, kb = item % problem.BlockCount;
            int j0 = kb * problem.BlockSize;
            int n = Math.Min(problem.BlockSize, problem.KeySeq - j0);
            int leaves = CoverageLeaves(problem.Geometry);
            var nodes = new CoverageParts(CanonicalTree.Decompose(0, leaves), (n + 15) & ~15, CoverageScratch(leaves, n));
            Attention.Dispatch(settings.KernelPath, new CoverageJob(problem, packs[g], lse, h => (((long)b * problem.Heads) + h) * problem.QuerySeq, b, kvh, 0, leaves, kb, nodes));
            nodes.Root(leaves)[..n].CopyTo(cover.AsSpan((int)((((long)b * problem.KvHeads) + kvh) * problem.KeySeq) + j0, n));
        }, cancellationToken);
        return cover;
    }

    /// <summary>
    /// Leaves of the coverage tree of one key head: leaf L = g·QB + qb covers query head kvh·G + g
    /// over the rows of query block qb (QB = ⌈Nq / B⌉ blocks of the key block size B). A leaf sums
    /// its rows in ascending order; leaves are summed in the canonical tree over leaf indices.
    /// </summary>
    public static int CoverageLeaves(AttentionGeometry geometry)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        return InspectKernel<LanesScalar, float>.CoverageLeaves(geometry);
    }

    /// <summary>
    /// A coverage shard's share: for its key blocks, the coverage sums of the maximal aligned
    /// subtrees of its leaves (its head's query blocks [RowStart / B, ⌈RowEnd / B⌉)), one row per
    /// node over the shard's keys. Rows must start on a query block; <paramref name="lse"/> holds
    /// the log-sum-exp of the shard's rows.
    /// </summary>
    public static CoverageParts CoverageOfShard(ShardInput input, ReadOnlySpan<float> lse, KernelPath path = KernelPath.Auto, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        var problem = input.ToProblem();
        var g = problem.Geometry;
        var (leafStart, leafEnd) = CoverageLeafRange(g, input.Head, input.RowStart, input.RowCount);
        if (lse.Length != input.RowCount)
        {
            throw new AttentionInputException($"the log-sum-exp of {input} holds {lse.Length} values; its rows need {input.RowCount}");
        }

        for (int r = 0; r < lse.Length; r++)
        {
            if (float.IsNaN(lse[r]) || float.IsPositiveInfinity(lse[r]))
            {
                throw new AttentionInputException($"the log-sum-exp of row {input.RowStart + r} (head {input.Head}, batch {input.Batch}) is {lse[r]}");
            }
        }

        var lseArray = lse.ToArray();
        int keys = input.KeyCount;
        var parts = new CoverageParts(CanonicalTree.Decompose(leafStart, leafEnd), keys);
        int kvh = input.Head / g.GroupSize;
        using var pack = KeyPack.Create(problem, input.Batch, kvh, input.BlockStart, input.BlockEnd);
        var scratch = CoverageScratch(leafEnd - leafStart, g.BlockSize);
        for (int kb = input.BlockStart; kb < input.BlockEnd; kb++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int j = (kb - input.BlockStart) * g.BlockSize;
            int n = Math.Min(g.BlockSize, g.KeySeq - (kb * g.BlockSize));
            var block = new CoverageParts(parts.Nodes, (n + 15) & ~15, scratch);
            Attention.Dispatch(path, new CoverageJob(problem, pack, lseArray, _ => -input.RowStart, input.Batch, kvh, leafStart, leafEnd, kb, block));
            for (int node = 0; node < parts.Nodes.Length; node++)
            {
                block.Row(node)[..n].CopyTo(parts.Row(node)[j..]);
            }
        }

        return parts;
    }

    /// <summary>Room for the fold's stack of subtrees over <paramref name="leaves"/> leaves, rows of up to <paramref name="keys"/> keys padded to 16.</summary>
    private static float[] CoverageScratch(int leaves, int keys) => new float[((2 * CanonicalTree.Height(Math.Max(leaves, 1))) + 4) * ((keys + 15) & ~15)];

    /// <summary>The coverage leaves of query head <paramref name="head"/>'s rows [rowStart, rowStart + rowCount), which must start on a query block.</summary>
    public static (int Start, int End) CoverageLeafRange(AttentionGeometry geometry, int head, int rowStart, int rowCount)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        int b = geometry.BlockSize;
        int rowEnd = rowStart + rowCount;
        if (rowStart % b != 0 || (rowEnd % b != 0 && rowEnd != geometry.QuerySeq) || rowCount <= 0)
        {
            throw new AttentionInputException($"coverage rows [{rowStart}, {rowEnd}) of head {head} do not start and end on query blocks of {b} rows");
        }

        int queryBlocks = CoverageLeaves(geometry) / geometry.GroupSize;
        int first = (head % geometry.GroupSize * queryBlocks) + (rowStart / b);
        return (first, first + ((rowCount + b - 1) / b));
    }

    /// <summary>Every (batch, key head)'s keys packed once for the whole pass.</summary>
    private sealed class Packs : IDisposable
    {
        private readonly KeyPack[] packs;

        public Packs(AttentionProblem problem)
        {
            packs = new KeyPack[problem.Batch * problem.KvHeads];
            try
            {
                for (int g = 0; g < packs.Length; g++)
                {
                    packs[g] = KeyPack.Create(problem, g / problem.KvHeads, g % problem.KvHeads, 0, problem.BlockCount);
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public KeyPack this[int group] => packs[group];

        public void Dispose()
        {
            foreach (var pack in packs)
            {
                pack?.Dispose();
            }
        }
    }

    /// <summary>
    /// The weights of rows [rowLo, rowHi) × keys [colLo, colHi) of (b, head), or their mean over
    /// all heads when <paramref name="head"/> is null, pooled into <paramref name="cellRows"/> ×
    /// <paramref name="cellCols"/> cells (row-major); unpooled when the cell counts equal the window.
    /// Row r of the window falls in cell ⌊r·cellRows / rows⌋, and likewise for columns.
    /// </summary>
    public static float[] Weights(AttentionProblem problem, ReadOnlySpan<float> lse, int b, int? head, (int Lo, int Hi) rowWindow, (int Lo, int Hi) colWindow, int cellRows, int cellCols, WeightPooling pooling = WeightPooling.Mean, KernelPath path = KernelPath.Auto, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        CheckLse(problem, lse);
        var (rowLo, rowHi) = rowWindow;
        var (colLo, colHi) = colWindow;
        if (b < 0 || b >= problem.Batch || head is { } hh && (hh < 0 || hh >= problem.Heads))
        {
            throw new ArgumentOutOfRangeException(nameof(head), $"batch {b}, head {head} is outside [0, {problem.Batch}) × [0, {problem.Heads})");
        }

        if (rowLo < 0 || rowHi > problem.QuerySeq || rowLo >= rowHi || colLo < 0 || colHi > problem.KeySeq || colLo >= colHi)
        {
            throw new ArgumentOutOfRangeException(nameof(rowWindow), $"window rows [{rowLo}, {rowHi}) × keys [{colLo}, {colHi}) is empty or outside [0, {problem.QuerySeq}) × [0, {problem.KeySeq})");
        }

        int rows = rowHi - rowLo, cols = colHi - colLo;
        if (cellRows < 1 || cellRows > rows || cellCols < 1 || cellCols > cols)
        {
            throw new ArgumentOutOfRangeException(nameof(cellRows), $"{cellRows} × {cellCols} cells do not fit a window of {rows} × {cols}");
        }

        var cells = new double[(long)cellRows * cellCols];
        var counts = new long[cells.Length];
        int headCount = head is null ? problem.Heads : 1;
        var lseArray = lse.ToArray();
        int firstBlock = colLo / problem.BlockSize, endBlock = ((colHi - 1) / problem.BlockSize) + 1;
        int firstPanel = rowLo / PanelKernelShape.PanelRows, panels = ((rowHi - 1) / PanelKernelShape.PanelRows) + 1 - firstPanel;

        // One panel of rows per work item: the weights of every head are summed (heads ascending) at
        // full resolution, divided by the head count, and only then pooled, so a cell is the max or
        // mean of the head-mean weights. Each panel pools into its own cell rows; the panels' cells
        // are then merged in panel order, so the bits do not depend on the thread count.
        // The window's keys of every key head in use, packed once and shared by the panels.
        int firstKvHead = (head ?? 0) / problem.GroupSize, kvHeads = head is null ? problem.KvHeads : 1;
        var packs = new KeyPack[kvHeads];
        using var release = new PackRelease(packs);
        for (int g = 0; g < kvHeads; g++)
        {
            packs[g] = KeyPack.Create(problem, b, firstKvHead + g, firstBlock, endBlock);
        }

        var pooled = new (long FirstCell, double[] Values)[panels];
        var cellOfCol = new int[cols];
        for (int j = 0; j < cols; j++)
        {
            cellOfCol[j] = (int)((long)j * cellCols / cols);
        }

        ParallelWork.Run(panels, threads, item =>
        {
            int panelStart = (firstPanel + item) * PanelKernelShape.PanelRows;
            int panelRows = Math.Min(PanelKernelShape.PanelRows, problem.QuerySeq - panelStart);
            var panel = new double[(long)panelRows * cols];
            for (int hi = 0; hi < headCount; hi++)
            {
                int h = head ?? hi;
                var pack = packs[(h / problem.GroupSize) - firstKvHead];
                var lseRows = lseArray.AsSpan((int)((((long)b * problem.Heads) + h) * problem.QuerySeq), problem.QuerySeq).ToArray();
                for (int kb = firstBlock; kb < endBlock; kb++)
                {
                    int j0 = kb * problem.BlockSize;
                    Attention.Dispatch(path, new WeightsJob(problem, pack, lseRows, b, h, panelStart, panelRows, kb, (r, weights) =>
                    {
                        int i = panelStart + r;
                        if (i < rowLo || i >= rowHi)
                        {
                            return;
                        }

                        for (int c = Math.Max(colLo - j0, 0); c < Math.Min(weights.Length, colHi - j0); c++)
                        {
                            panel[((long)r * cols) + j0 + c - colLo] += weights[c];
                        }
                    }));
                }
            }

            int i0 = Math.Max(panelStart, rowLo), i1 = Math.Min(panelStart + panelRows, rowHi);
            long firstCellRow = (long)(i0 - rowLo) * cellRows / rows, lastCellRow = (long)(i1 - 1 - rowLo) * cellRows / rows;
            var values = new double[(lastCellRow - firstCellRow + 1) * cellCols];
            if (pooling == WeightPooling.Max)
            {
                Array.Fill(values, double.NegativeInfinity);
            }

            for (int i = i0; i < i1; i++)
            {
                long cellRow = ((long)(i - rowLo) * cellRows / rows) - firstCellRow;
                var rowValues = values.AsSpan((int)(cellRow * cellCols), cellCols);
                var panelRow = panel.AsSpan((int)((long)(i - panelStart) * cols), cols);
                for (int j = 0; j < cols; j++)
                {
                    double value = panelRow[j] / headCount;
                    ref double cell = ref rowValues[cellOfCol[j]];
                    cell = pooling == WeightPooling.Max ? Math.Max(cell, value) : cell + value;
                }
            }

            pooled[item] = (firstCellRow * cellCols, values);
        }, cancellationToken);

        foreach (var (firstCell, values) in pooled)
        {
            for (int c = 0; c < values.Length; c++)
            {
                long cell = firstCell + c;
                cells[cell] = pooling == WeightPooling.Max ? Math.Max(cells[cell], values[c]) : cells[cell] + values[c];
            }
        }

        for (int i = rowLo; i < rowHi; i++)
        {
            long cellRow = (long)(i - rowLo) * cellRows / rows;
            for (int c = 0; c < cellCols; c++)
            {
                // Columns [⌈c·cols/cellCols⌉, ⌈(c+1)·cols/cellCols⌉) fall in cell c.
                long lo = (((long)c * cols) + cellCols - 1) / cellCols, hi = ((((long)c + 1) * cols) + cellCols - 1) / cellCols;
                counts[(cellRow * cellCols) + c] += hi - lo;
            }
        }

        var result = new float[cells.Length];
        for (int c = 0; c < cells.Length; c++)
        {
            result[c] = pooling == WeightPooling.Max ? (float)cells[c] : (float)(cells[c] / counts[c]);
        }

        return result;
    }

    private readonly struct PackRelease(KeyPack?[] packs) : IDisposable
    {
        public void Dispose()
        {
            foreach (var pack in packs)
            {
                pack?.Dispose();
            }
        }
    }

    private static void CheckLse(AttentionProblem problem, ReadOnlySpan<float> lse)
    {
        long expected = (long)problem.Batch * problem.Heads * problem.QuerySeq;
        if (lse.Length != expected)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{problem.Batch}, {problem.Heads}, {problem.QuerySeq}] needs {expected}", nameof(lse));
        }
    }

    private readonly record struct EntropyJob(AttentionProblem P, KeyPack Keys, float[] Lse, float[] Entropy, int B, int H, int RowStart, int Rows) : Attention.IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
        {
            var (first, end) = P.VisibleBlocks(B, RowStart, Rows);
            int offset = (int)((((long)B * P.Heads) + H) * P.QuerySeq);
            var rowsLse = Lse.AsSpan(offset, P.QuerySeq);
            var rowsEntropy = Entropy.AsSpan(offset, P.QuerySeq);
            if (first >= end)
            {
                rowsEntropy.Slice(RowStart, Rows).Clear();
                return;
            }

            InspectKernel<TL, TV>.EntropyPanel(P, Attention.WorkspaceFor(P, 0, P.BlockCount), Keys, rowsLse, B, H, RowStart, Rows, first, end, rowsEntropy);
        }
    }

    private readonly record struct CoverageJob(AttentionProblem P, KeyPack Keys, float[] Lse, Func<int, long> LseBase, int B, int Kvh, int LeafStart, int LeafEnd, int Block, CoverageParts Parts) : Attention.IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
        {
            int count = InspectKernel<TL, TV>.CoverageNodes(P, Attention.WorkspaceFor(P, 0, P.BlockCount), Keys, Lse, LseBase, B, Kvh, LeafStart, LeafEnd, Block, Parts.Values);
            if (count != Parts.Nodes.Length)
            {
                throw new InvalidOperationException($"coverage of leaves [{LeafStart}, {LeafEnd}) folded into {count} nodes, not {Parts.Nodes.Length}");
            }
        }
    }

    private readonly record struct WeightsJob(AttentionProblem P, KeyPack Keys, float[] Lse, int B, int H, int RowStart, int Rows, int Block, Action<int, ReadOnlySpan<float>> Sink) : Attention.IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
            => InspectKernel<TL, TV>.WeightsBlock(P, Attention.WorkspaceFor(P, 0, P.BlockCount), Keys, Lse, B, H, RowStart, Rows, Block, Sink);
    }
}
