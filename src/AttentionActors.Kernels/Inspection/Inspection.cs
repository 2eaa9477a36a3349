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
public static partial class Inspection
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
}
