using AttentionActors.Kernels.Simd;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>Cells <see cref="Range"/> of a weights window, row-major: what one weights shard returns.</summary>
public sealed record WeightsCells(WeightsCellRange Range, float[] Values);

public static partial class Inspection
{
    /// <summary>Keys a work item's panel buffer spans at least (whole cell columns are kept together).</summary>
    private const int ChunkKeys = 1024;

    /// <summary>
    /// The weights of rows [rowLo, rowHi) × keys [colLo, colHi) of (b, head), or their mean over
    /// all heads when <paramref name="head"/> is null, pooled into <paramref name="cellRows"/> ×
    /// <paramref name="cellCols"/> cells (row-major); unpooled when the cell counts equal the window.
    /// See <see cref="WeightsWindow"/> for the cells and the order their bits follow.
    /// </summary>
    public static float[] Weights(AttentionProblem problem, ReadOnlySpan<float> lse, int b, int? head, (int Lo, int Hi) rowWindow, (int Lo, int Hi) colWindow, int cellRows, int cellCols, WeightPooling pooling = WeightPooling.Mean, KernelPath path = KernelPath.Auto, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        CheckLse(problem, lse);
        var window = new WeightsWindow(b, head, rowWindow.Lo, rowWindow.Hi, colWindow.Lo, colWindow.Hi, cellRows, cellCols, pooling);
        if (window.Invalid(problem.Geometry) is { } invalid)
        {
            throw new ArgumentOutOfRangeException(nameof(rowWindow), invalid);
        }

        var lseArray = lse.ToArray();
        var all = new WeightsCellRange(0, cellRows, 0, cellCols, problem.BlockCount);
        return WeightsCells(window, problem.Geometry, _ => problem, h => lseArray.AsMemory((int)((((long)b * problem.Heads) + h) * problem.QuerySeq), problem.QuerySeq), 0, all, path, threads, cancellationToken);
    }

    /// <summary>
    /// A weights shard's cells (<see cref="WeightsWindow.CellsOf"/>), from its own rows, keys and
    /// log-sum-exp, checked first: bit for bit the same cells of <see cref="Weights"/>.
    /// </summary>
    public static WeightsCells WeightsOfShard(ShardInput input, KernelPath path = KernelPath.Auto, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        var problems = input.WeightsProblems();
        var g = input.Geometry;
        var window = g.Weights!;
        var range = window.CellsOf(g, input.RowStart, input.RowCount, input.BlockStart, input.BlockEnd);
        var lse = input.Lse.Span;
        for (int r = 0; r < lse.Length; r++)
        {
            if (float.IsNaN(lse[r]) || float.IsPositiveInfinity(lse[r]))
            {
                throw new AttentionInputException($"the log-sum-exp of row {input.RowStart + (r % input.RowCount)} (head {window.FirstHead + (r / input.RowCount)}, batch {input.Batch}) is {lse[r]}");
            }
        }

        int first = window.FirstHead;
        var values = WeightsCells(window, g, h => problems[h - first], h => input.Lse.Slice((h - first) * input.RowCount, input.RowCount), input.RowStart, range, path, 1, cancellationToken);
        return new WeightsCells(range, values);
    }

    /// <summary>
    /// Cells <paramref name="range"/> of <paramref name="window"/>. <paramref name="problemOf"/> gives
    /// the problem holding a head's rows and keys; <paramref name="lseOf"/> its log-sum-exp from row
    /// <paramref name="lseFirstRow"/> on. Work items are runs of whole cell rows (≥ one panel of rows);
    /// within one, panels of rows go ascending and, per panel, chunks of whole cell columns: the
    /// weights of every head are summed (heads ascending) in float at full resolution and pooled into
    /// their cells rows ascending, a row's keys ascending: the max, or a sum in double (per row, then
    /// added to the cell); the head count (and the mean's cell size) divides at the end. A cell therefore
    /// sees its (i, j) in the same order whatever range of whole cells is computed.
    /// </summary>
    private static float[] WeightsCells(WeightsWindow window, AttentionGeometry g, Func<int, AttentionProblem> problemOf, Func<int, ReadOnlyMemory<float>> lseOf, int lseFirstRow, WeightsCellRange range, KernelPath path, int threads, CancellationToken cancellationToken)
    {
        if (range.Count == 0)
        {
            return [];
        }

        int headCount = window.HeadCount(g);
        int width = range.CellColEnd - range.CellColStart;
        bool max = window.Pooling == WeightPooling.Max;
        int colA = window.CellColStart(range.CellColStart), colB = window.CellColStart(range.CellColEnd);

        // The keys of every key head in use, packed once and shared by the work items.
        var (firstKv, kvHeads) = window.KvHeads(g);
        var packs = new KeyPack[kvHeads];
        using var release = new PackRelease(packs);
        for (int i = 0; i < kvHeads; i++)
        {
            int h = window.Head ?? (firstKv + i) * g.GroupSize;
            packs[i] = KeyPack.Create(problemOf(h), window.Batch, firstKv + i, colA / g.BlockSize, ((colB - 1) / g.BlockSize) + 1);
        }

        var items = Runs(range.CellRowStart, range.CellRowEnd, window.CellRowStart, PanelKernelShape.PanelRows);
        var chunks = Runs(range.CellColStart, range.CellColEnd, window.CellColStart, ChunkKeys);
        var result = new float[range.Count];
        int chunkKeys = chunks.Max(c => window.CellColStart(c.Hi) - window.CellColStart(c.Lo));

        // The first key of each cell column of the range, and the end of the last.
        var colStart = new int[width + 1];
        for (int c = 0; c <= width; c++)
        {
            colStart[c] = window.CellColStart(range.CellColStart + c);
        }

        ParallelWork.Run(items.Count, threads, item =>
        {
            var panelBuffer = System.Buffers.ArrayPool<float>.Shared.Rent(PanelKernelShape.PanelRows * chunkKeys);
            try
            {
                PoolItem(items[item], panelBuffer);
            }
            finally
            {
                System.Buffers.ArrayPool<float>.Shared.Return(panelBuffer);
            }
        }, cancellationToken);
        return result;

        void PoolItem((int Lo, int Hi) cellRows, float[] panelBuffer)
        {
            var (cr0, cr1) = cellRows;
            int i0 = window.CellRowStart(cr0), i1 = window.CellRowStart(cr1);
            var cells = new double[(long)(cr1 - cr0) * width];
            if (max)
            {
                Array.Fill(cells, double.NegativeInfinity);
            }

            for (int panelStart = i0; panelStart < i1; panelStart += PanelKernelShape.PanelRows)
            {
                int panelRows = Math.Min(PanelKernelShape.PanelRows, i1 - panelStart);
                foreach (var (cc0, cc1) in chunks)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int j0 = colStart[cc0 - range.CellColStart], j1 = colStart[cc1 - range.CellColStart], cols = j1 - j0;

                    // Σ_h a_hij over the heads in use, heads ascending, in float at full resolution.
                    var panel = panelBuffer.AsSpan(0, panelRows * cols);
                    panel.Clear();
                    for (int hi = 0; hi < headCount; hi++)
                    {
                        int h = window.Head ?? hi;
                        var pack = packs[(h / g.GroupSize) - firstKv];
                        Attention.Dispatch(path, new WeightsJob(problemOf(h), pack, lseOf(h)[(panelStart - lseFirstRow)..], window.Batch, h, panelStart, panelRows, j0, j1, panelBuffer));
                    }

                    // Pooled rows ascending; within a row a cell's keys ascending (max, or a sum in double).
                    for (int r = 0; r < panelRows; r++)
                    {
                        var cellRow = cells.AsSpan((window.CellRowOf(panelStart + r) - cr0) * width, width);
                        var panelRow = panel.Slice(r * cols, cols);
                        for (int cc = cc0; cc < cc1; cc++)
                        {
                            int c = cc - range.CellColStart;
                            var run = panelRow[(colStart[c] - j0)..(colStart[c + 1] - j0)];
                            ref double cell = ref cellRow[c];
                            if (max)
                            {
                                cell = Math.Max(cell, System.Numerics.Tensors.TensorPrimitives.Max(run));
                            }
                            else
                            {
                                double sum = 0;
                                foreach (float x in run)
                                {
                                    sum += x;
                                }

                                cell += sum;
                            }
                        }
                    }
                }
            }

            for (int cr = cr0; cr < cr1; cr++)
            {
                long rows = window.CellRowStart(cr + 1) - window.CellRowStart(cr);
                for (int c = 0; c < width; c++)
                {
                    double cell = cells[((cr - cr0) * width) + c];
                    long count = rows * (colStart[c + 1] - colStart[c]);
                    result[((long)(cr - range.CellRowStart) * width) + c] = (float)(max ? cell / headCount : cell / ((double)count * headCount));
                }
            }
        }
    }

    /// <summary>Consecutive runs of cells [start, end), each spanning at least <paramref name="span"/> rows or keys (the last may span fewer).</summary>
    private static List<(int Lo, int Hi)> Runs(int start, int end, Func<int, int> firstOf, int span)
    {
        var runs = new List<(int, int)>();
        for (int lo = start; lo < end;)
        {
            int hi = lo + 1;
            while (hi < end && firstOf(hi) - firstOf(lo) < span)
            {
                hi++;
            }

            runs.Add((lo, hi));
            lo = hi;
        }

        return runs;
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

    private readonly record struct WeightsJob(AttentionProblem P, KeyPack Keys, ReadOnlyMemory<float> Lse, int B, int H, int RowStart, int Rows, int ColLo, int ColHi, float[] Panel) : Attention.IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
            => InspectKernel<TL, TV>.WeightsPanel(P, Attention.WorkspaceFor(P, 0, P.BlockCount), Keys, Lse.Span, B, H, RowStart, Rows, ColLo, ColHi, Panel);
    }
}
