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

    /// <summary>
    /// Values (m, l or o) one rented array of split-KV partials may hold: the largest array the shared
    /// pool keeps. Tests shrink it to put every unit in a bank of its own; the bits never depend on it.
    /// </summary>
    internal static long PartialBankValues { get; set; } = 1L << 30;

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
        var cache = problem.Cache;
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
        int stack = problem.GroupSize * rows <= PanelKernelShape.PanelRows ? problem.GroupSize : 1;
        int unitRows = stack * rows;
        int unitsPerBatch = heads / stack;
        int units = problem.Batch * unitsPerBatch;
        int width = problem.PartialWidth;

        // Every tree node a unit's chunks produce gets a slot, in key order: chunk c of batch b owns
        // slots [slotStart[b][c], slotStart[b][c + 1]) of each of its units.
        var nodes = new TreeNode[problem.Batch][];
        var slotStart = new int[problem.Batch][];
        for (int b = 0; b < problem.Batch; b++)
        {
            var list = new List<TreeNode>();
            slotStart[b] = new int[chunks + 1];
            for (int c = 0; c < chunks; c++)
            {
                int first = Math.Max(c * chunk, visible[b].First), end = Math.Min((c + 1) * chunk, visible[b].End);
                if (first < end)
                {
                    list.AddRange(CanonicalTree.Decompose(first, end));
                }

                slotStart[b][c + 1] = list.Count;
            }

            nodes[b] = [.. list];
        }

        // The units' slots lie end to end in banks of rented arrays, each at most the 2^30 values the
        // shared pool keeps: a decoding step that repeats leaves no garbage and faults in no new pages.
        var bankOf = new int[units];
        var unitSlot = new int[units];
        var bankSlots = new List<int>();
        for (int u = 0; u < units; u++)
        {
            long slots = nodes[u / unitsPerBatch].Length;
            if (slots * unitRows * width > Array.MaxLength)
            {
                throw new InvalidOperationException($"split-KV: {slots} key chunks × {unitRows} query rows × {width} partial values do not fit one array; use larger key blocks (AttentionOptions.BlockSize, --block)");
            }

            if (bankSlots.Count == 0 || (bankSlots[^1] > 0 && (bankSlots[^1] + slots) * unitRows * width > PartialBankValues))
            {
                bankSlots.Add(0);
            }

            bankOf[u] = bankSlots.Count - 1;
            unitSlot[u] = bankSlots[^1];
            bankSlots[^1] += (int)slots;
        }

        var output = into ?? AttentionTensor.Zeros("out", problem.Batch, heads, rows, problem.ValueDim);
        var lse = new float[problem.Batch * heads * rows];
        var entropy = problem.Options.Entropy ? new float[lse.Length] : null;
        var pool = System.Buffers.ArrayPool<float>.Shared;
        var m = new float[bankSlots.Count][];
        var l = new float[bankSlots.Count][];
        var o = new float[bankSlots.Count][];
        try
        {
            for (int k = 0; k < bankSlots.Count; k++)
            {
                int entries = bankSlots[k] * unitRows;
                m[k] = pool.Rent(entries);
                l[k] = pool.Rent(entries);
                o[k] = pool.Rent(entries * width);
            }

            ParallelWork.Run(problem.Batch * problem.KvHeads * chunks, threads, item =>
            {
                int group = item / chunks, c = item % chunks;
                int b = group / problem.KvHeads, kvh = group % problem.KvHeads;
                int first = Math.Max(c * chunk, visible[b].First), end = Math.Min((c + 1) * chunk, visible[b].End);
                if (first >= end)
                {
                    return;
                }

                // When the whole group is one panel, that panel packs the keys as it reaches them, so
                // the chunk's keys stream in from memory while the blocks before them compute. A
                // key/value cache holds them packed already.
                bool onePanel = stack == problem.GroupSize;
                using var pack = onePanel || cache is not null ? null : KeyPack.Create(problem, b, kvh, first, end);
                int firstSlot = slotStart[b][c], count = slotStart[b][c + 1] - firstSlot;
                for (int h = kvh * problem.GroupSize; h < (kvh + 1) * problem.GroupSize; h += stack)
                {
                    int u = ((b * heads) + h) / stack;
                    var target = new PartialTarget(m[bankOf[u]], l[bankOf[u]], o[bankOf[u]], unitSlot[u] + firstSlot, unitRows, count);
                    Dispatch(settings.KernelPath, new CollectPanel(problem, pack, target, b, h, 0, 0, unitRows, first, end, rows));
                }
            }, cancellationToken);

            // Each unit's slots merge in place in the canonical tree (the bits of CanonicalTree.Reduce,
            // which merges the same nodes in the same order), and its root is finalized into the output.
            long rowsDone = 0;
            ParallelWork.Run(units, threads, unit =>
            {
                float[] um = m[bankOf[unit]], ul = l[bankOf[unit]], uo = o[bankOf[unit]];
                int slot0 = unitSlot[unit];
                int root = CanonicalTree.Evaluate(problem.BlockCount, nodes[unit / unitsPerBatch], (a, c) =>
                {
                    for (int r = 0; r < unitRows; r++)
                    {
                        int at = ((slot0 + a) * unitRows) + r, from = ((slot0 + c) * unitRows) + r;
                        PartialMath.MergeInto(ref um[at], ref ul[at], uo.AsSpan(at * width, width), um[from], ul[from], uo.AsSpan(from * width, width));
                    }

                    return a;
                });

                int dv = problem.ValueDim;
                var outSpan = output.Data.Span;
                // The unit's rows are its heads' rows in order, so they are adjacent in the output too.
                for (int r = 0; r < unitRows; r++)
                {
                    int row = (unit * unitRows) + r, at = ((slot0 + root) * unitRows) + r;
                    var dst = outSpan.Slice(row * dv, dv);
                    float rm = root < 0 ? float.NegativeInfinity : um[at], rl = root < 0 ? 0f : ul[at];
                    PartialMath.Finalize(rm, rl, root < 0 ? default : uo.AsSpan(at * width, dv), dst, out lse[row]);
                    if (entropy is not null)
                    {
                        entropy[row] = root < 0 ? 0f : PartialMath.Entropy(rl, uo[(at * width) + dv], lse[row]);
                    }
                }

                progress?.Report(Interlocked.Add(ref rowsDone, unitRows));
            }, cancellationToken);
        }
        finally
        {
            foreach (var array in m.Concat(l).Concat(o))
            {
                if (array is { Length: > 0 })
                {
                    pool.Return(array);
                }
            }
        }

        return new AttentionResult(output, lse) { Entropy = entropy };
    }
}
