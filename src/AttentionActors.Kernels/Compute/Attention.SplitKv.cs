using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>
/// Decoding shapes: one panel of query rows per head (Nq ≤ 256) against many keys. Splitting by
/// head and panel would give each thread whole heads, and every query head would stream its K/V
/// from memory on its own. Instead the keys are split (split-KV) into aligned chunks of blocks small
/// enough to stay in the L2 cache: a work item packs one chunk of one (batch, kv-head) and runs every
/// query head of the group against it, so each key and value is read from memory once. When the
/// group's rows fit one panel, its heads are stacked into it (with one query row per head, the heads
/// fill the register tiles that a single row would leave three quarters empty). The chunks'
/// partials are then merged in the canonical tree, exactly as the reducer merges shards: the bits
/// are those of <see cref="Compute(AttentionProblem, ComputeOptions?, IProgress{long}?, CancellationToken)"/>'s panel path.
/// </summary>
public static partial class Attention
{
    /// <summary>K/V bytes one chunk may span: half of a 2 MiB L2, leaving room for Q, S, P and the partials.</summary>
    private const long ChunkBytes = 1 << 20;

    /// <summary>Whether <see cref="Compute(AttentionProblem, ComputeOptions?, IProgress{long}?, CancellationToken)"/> splits the keys instead of the query rows.</summary>
    internal static bool SplitsKeys(AttentionProblem p) => p.QuerySeq <= PanelKernelShape.PanelRows && p.BlockCount > 1;

    /// <summary>
    /// Blocks per chunk: a power of two (so an inner chunk is one aligned tree node) whose K and V fit
    /// <see cref="ChunkBytes"/>, halved while there are fewer than 4 items per thread to share.
    /// </summary>
    internal static int ChunkBlocks(AttentionProblem p, int threads)
    {
        long blockBytes = (long)p.BlockSize * (KeyPack.FeatureDepth(p) + p.ValueDim) * sizeof(float);
        int chunk = 1;
        while (chunk * 2L * blockBytes <= ChunkBytes && chunk * 2 < p.BlockCount)
        {
            chunk *= 2;
        }

        long groups = (long)p.Batch * p.KvHeads;
        while (chunk > 1 && groups * ((p.BlockCount + chunk - 1) / chunk) < 4L * threads)
        {
            chunk /= 2;
        }

        return chunk;
    }

    private static AttentionResult ComputeSplitKeys(AttentionProblem problem, ComputeOptions settings, IProgress<long>? progress, AttentionTensor? into, CancellationToken cancellationToken)
    {
        int threads = settings.Threads > 0 ? settings.Threads : Environment.ProcessorCount;
        int rows = problem.QuerySeq;
        int heads = problem.Heads;
        int chunk = ChunkBlocks(problem, threads);
        int chunks = (problem.BlockCount + chunk - 1) / chunk;
        var visible = new (int First, int End)[problem.Batch];
        for (int b = 0; b < problem.Batch; b++)
        {
            visible[b] = problem.VisibleBlocks(b, 0, rows);
        }

        // A unit is `stack` adjacent query heads of one group, computed as one panel of stack·Nq rows.
        // parts[unit·chunks + c]: the partials of chunk c for the unit (null where it sees nothing).
        int stack = problem.GroupSize * rows <= PanelKernelShape.PanelRows ? problem.GroupSize : 1;
        int unitRows = stack * rows;
        int units = problem.Batch * heads / stack;
        var parts = new PartialSet?[units * chunks];
        ParallelWork.Run(problem.Batch * problem.KvHeads * chunks, threads, item =>
        {
            int group = item / chunks, c = item % chunks;
            int b = group / problem.KvHeads, kvh = group % problem.KvHeads;
            int first = Math.Max(c * chunk, visible[b].First), end = Math.Min((c + 1) * chunk, visible[b].End);
            if (first >= end)
            {
                return;
            }

            // When the whole group is one panel, that panel packs each block as it reaches it, so
            // the chunk's keys stream in from memory while the blocks before them compute.
            bool onePanel = stack == problem.GroupSize;
            using var pack = onePanel ? KeyPack.Allocate(problem, first, end) : KeyPack.Create(problem, b, kvh, first, end);
            var nodes = CanonicalTree.Decompose(first, end);
            for (int h = kvh * problem.GroupSize; h < (kvh + 1) * problem.GroupSize; h += stack)
            {
                var set = new PartialSet(nodes, unitRows, problem.PartialWidth);
                Dispatch(settings.KernelPath, new CollectPanel(problem, pack, set, b, h, 0, 0, unitRows, first, end, rows, onePanel));
                parts[((((b * heads) + h) / stack) * chunks) + c] = set;
            }
        }, cancellationToken);

        var output = into ?? AttentionTensor.Zeros("out", problem.Batch, heads, rows, problem.ValueDim);
        var lse = new float[problem.Batch * heads * rows];
        var entropy = problem.Options.Entropy ? new float[lse.Length] : null;
        long rowsDone = 0;
        ParallelWork.Run(units, threads, unit =>
        {
            var mine = parts.AsSpan(unit * chunks, chunks).ToArray().OfType<PartialSet>().ToList();
            var root = mine.Count == 0 ? null : CanonicalTree.Reduce(problem.BlockCount, mine);
            int dv = problem.ValueDim;
            var outSpan = output.Data.Span;
            // The unit's rows are its heads' rows in order, so they are adjacent in the output too.
            for (int r = 0; r < unitRows; r++)
            {
                int row = (unit * unitRows) + r;
                var dst = outSpan.Slice(row * dv, dv);
                float m = root?.M[r] ?? float.NegativeInfinity, l = root?.L[r] ?? 0f;
                PartialMath.Finalize(m, l, root is null ? default : root.RowO(0, r)[..dv], dst, out lse[row]);
                if (entropy is not null)
                {
                    entropy[row] = root is null ? 0f : PartialMath.Entropy(l, root.RowO(0, r)[dv], lse[row]);
                }
            }

            progress?.Report(Interlocked.Add(ref rowsDone, unitRows));
        }, cancellationToken);

        return new AttentionResult(output, lse) { Entropy = entropy };
    }
}
