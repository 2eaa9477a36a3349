using System.Runtime.Intrinsics;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>The finished attention: <c>Output [B, H, Nq, Dv]</c> and <c>Lse [B, H, Nq]</c> (−∞ for rows with no visible key).</summary>
public sealed record AttentionResult(AttentionTensor Output, float[] Lse)
{
    /// <summary>
    /// With <see cref="AttentionOptions.Entropy"/>: each row's entropy <c>[B, H, Nq]</c> in nats,
    /// H = lse − t/l from the partials' extra column; 0 for a row with no visible key. Else null.
    /// </summary>
    public float[]? Entropy { get; init; }
}

/// <summary>
/// Exact attention on one node: <c>out_i = Σ_j softmax_j(s_ij) v_j</c> computed block by block with
/// online softmax and merged in the canonical tree, so the bits equal those of any sharded run.
/// </summary>
public static partial class Attention
{
    /// <summary>Validates and computes in one call.</summary>
    public static AttentionResult Compute(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null, ComputeOptions? settings = null, CancellationToken cancellationToken = default)
        => Compute(AttentionProblem.Create(q, k, v, options), settings, null, cancellationToken);

    /// <summary>
    /// Computes every row of a validated problem, split across threads by (batch·head, 256-row panel).
    /// <paramref name="progress"/>, when given, receives the number of query rows finished so far.
    /// </summary>
    public static AttentionResult Compute(AttentionProblem problem, ComputeOptions? settings = null, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
        => Compute(problem, settings, progress, null, cancellationToken);

    /// <summary>
    /// <see cref="Compute(AttentionProblem, ComputeOptions?, IProgress{long}?, CancellationToken)"/>
    /// writing every output row into <paramref name="into"/> (one [B, H, Nq, Dv] array, such as a
    /// memory-mapped output file) instead of a new array; its old contents are never read.
    /// </summary>
    public static AttentionResult ComputeInto(AttentionProblem problem, AttentionTensor into, ComputeOptions? settings = null, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(into);
        return Compute(problem, settings, progress, into, cancellationToken);
    }

    private static AttentionResult Compute(AttentionProblem problem, ComputeOptions? settings, IProgress<long>? progress, AttentionTensor? into, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(problem);
        settings ??= new ComputeOptions();
        if (into is not null && (into.IsSegmented || into.IsWindow || into.Batch != problem.Batch || into.Heads != problem.Heads || into.Seq != problem.QuerySeq || into.Dim != problem.ValueDim))
        {
            throw new ArgumentException($"{into} is not one [{problem.Batch}, {problem.Heads}, {problem.QuerySeq}, {problem.ValueDim}] array for this problem's output", nameof(into));
        }

        // A problem whose keys and values are in a cache (a step of at most one panel of rows) has
        // no K and V to pack: only the split-KV path reads a cache.
        if (SplitsKeys(problem) || problem.Cache is not null)
        {
            return ComputeSplitKeys(problem, settings, progress, into, cancellationToken);
        }

        var output = into ?? AttentionTensor.Zeros("out", problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim);
        var lse = new float[problem.Batch * problem.Heads * problem.QuerySeq];
        var entropy = problem.Options.Entropy ? new float[lse.Length] : null;
        int panels = (problem.QuerySeq + PanelKernelShape.PanelRows - 1) / PanelKernelShape.PanelRows;
        int kvGroups = problem.Batch * problem.KvHeads;
        int perGroup = problem.GroupSize * panels;
        long rowsDone = 0;

        // A panel of the dot-product or Gaussian score transposes its keys as it reaches them, one
        // block at a time into L1, and reads V where it lies: a pack of the whole (batch, kv-head)
        // made first is a pass over K and V more, and the panels read it back from L3 (see
        // PackAsItGoesRows for the figures). Cosine and additive scores read each key's features
        // (normalised, or projected through W_k): those are computed once per (batch, kv-head), all
        // in parallel up front, so no thread waits on another's packing. Items run grouped by
        // (batch, kv-head), so a pack serves all its query heads and panels and is dropped after the
        // last of them; within a head, later (costlier under a causal mask) panels go first so the
        // threads finish together.
        bool packFirst = problem.Options.Score is not (ScoreFunction.Dot or ScoreFunction.Gaussian);
        var packs = new KeyPack?[kvGroups];
        var remaining = new int[kvGroups];
        for (int g = 0; g < kvGroups && packFirst; g++)
        {
            packs[g] = KeyPack.Allocate(problem, 0, problem.BlockCount, values: true);
            remaining[g] = perGroup;
        }

        if (packFirst)
        {
            ParallelWork.Run(kvGroups * problem.BlockCount, settings.Threads, item =>
            {
                int g = item / problem.BlockCount;
                packs[g]!.PackBlock(problem, g / problem.KvHeads, g % problem.KvHeads, item % problem.BlockCount);
            }, cancellationToken);
        }

        ParallelWork.Run(kvGroups * perGroup, settings.Threads, item =>
        {
            int group = item / perGroup;
            int within = item % perGroup;
            int b = group / problem.KvHeads;
            int h = (group % problem.KvHeads * problem.GroupSize) + (within / panels);
            int panel = panels - 1 - (within % panels);
            int rowStart = panel * PanelKernelShape.PanelRows;
            int rows = Math.Min(PanelKernelShape.PanelRows, problem.QuerySeq - rowStart);
            var pack = Volatile.Read(ref packs[group]);
            Dispatch(settings.KernelPath, new FinishPanel(problem, pack, output, lse, entropy, b, h, rowStart, rows));
            if (packFirst && Interlocked.Decrement(ref remaining[group]) == 0)
            {
                Interlocked.Exchange(ref packs[group], null)?.Dispose();
            }

            progress?.Report(Interlocked.Add(ref rowsDone, rows));
        }, cancellationToken);

        return new AttentionResult(output, lse) { Entropy = entropy };
    }

    /// <summary>
    /// Query rows up to which a shard's panel packs its keys as it goes, rather than packing the
    /// shard's keys and values first: one panel's. A pack pays off when several panels read it; for
    /// one, packing first is a pass over K and V more. Measured on AMD Zen 4 (2026-12-07), one thread,
    /// shards of whole key ranges: dense N 4096, d 128, shards of 64 rows 91.0–93.8 GFLOP/s as they go
    /// against 82.5–84.4 packed first, of 256 rows 93.5–95.4 against 85.0–88.8; N 8192, d 64, 256
    /// rows 83.9 against 80.1; a decoding step's shards (32 heads over 8 stacked into 64 rows, 16
    /// rows a head, 65536 keys) 183 ms against 265. (Earlier, on another host, packing first had
    /// measured faster at 64 rows of d 128: 43.0 against 39.5 GFLOP/s.)
    /// </summary>
    internal const int PackAsItGoesRows = PanelKernelShape.PanelRows;

    /// <summary>
    /// The partials of one shard from its own data (<see cref="ShardInput.ToProblem"/> checks it
    /// first): the same bits as computing the shard on the whole problem.
    /// </summary>
    public static PartialSet ComputePartials(ShardInput input, KernelPath path = KernelPath.Auto, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);

        // A layer shard brings inputs and its head's weights: its Q rows and K/V blocks are projected here first.
        var problem = input.Projected().ToProblem();
        return ComputePartials(problem, input.Batch, input.Head, input.RowStart, input.RowCount, input.BlockStart, input.BlockEnd, path, cancellationToken);
    }

    /// <summary>
    /// The partials of query rows [rowStart, rowStart + rowCount) of (b, h) over key blocks
    /// [blockStart, blockEnd): one entry per maximal aligned tree node of the part of that range
    /// the rows can see (none when they see nothing), or the root alone when the range holds every
    /// block they see (<see cref="AttentionGeometry.ResultNodes(int,int,int,int,int)"/>). This is a worker's whole job.
    /// </summary>
    public static PartialSet ComputePartials(AttentionProblem problem, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd, KernelPath path = KernelPath.Auto, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        CheckRange(problem, b, h, rowStart, rowCount, blockStart, blockEnd);
        var (seenFirst, seenEnd) = problem.Geometry.VisibleBlocks(b, rowStart, rowCount);
        int first = Math.Max(seenFirst, blockStart), end = Math.Min(seenEnd, blockEnd);
        var nodes = first < end ? CanonicalTree.Decompose(first, end) : [];
        var set = new PartialSet(nodes, rowCount, problem.PartialWidth);
        if (nodes.Length == 0)
        {
            return set;
        }

        // A shard of at most one panel's rows reads each key and value once: its panel packs the keys
        // as it goes, while the blocks before them compute (see PanelKernel.Run), instead of packing
        // the shard's keys and values first (see PackAsItGoesRows). Keys and values in a key/value
        // cache are read where they are: they lie as a pack would put them.
        using var pack = rowCount <= PackAsItGoesRows || problem.Cache is not null ? null : KeyPack.Create(problem, b, h / problem.GroupSize, first, end, values: true);
        for (int r0 = 0; r0 < rowCount; r0 += PanelKernelShape.PanelRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int rows = Math.Min(PanelKernelShape.PanelRows, rowCount - r0);
            Dispatch(path, new CollectPanel(problem, pack, PartialTarget.Of(set), b, h, rowStart + r0, r0, rows, first, end));
        }

        // The same tree evaluation the reducer would make of these nodes: the bits do not change, the partials shrink to one per row.
        return AttentionGeometry.ResultNodes(problem.BlockCount, (seenFirst, seenEnd), blockStart, blockEnd) is [var only] && only != nodes[0]
            ? CanonicalTree.Reduce(problem.BlockCount, [set])
            : set;
    }

    private static void CheckRange(AttentionProblem p, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        if (b < 0 || b >= p.Batch || h < 0 || h >= p.Heads)
        {
            throw new ArgumentOutOfRangeException(nameof(b), $"batch {b}, head {h} is outside [0, {p.Batch}) × [0, {p.Heads})");
        }

        if (rowStart < 0 || rowCount < 0 || rowStart + (long)rowCount > p.QuerySeq)
        {
            throw new ArgumentOutOfRangeException(nameof(rowStart), $"query rows [{rowStart}, {rowStart + (long)rowCount}) are outside [0, {p.QuerySeq})");
        }

        if (blockStart < 0 || blockEnd < blockStart || blockEnd > p.BlockCount)
        {
            throw new ArgumentOutOfRangeException(nameof(blockStart), $"key blocks [{blockStart}, {blockEnd}) are outside [0, {p.BlockCount})");
        }
    }

    /// <summary>Runs <paramref name="job"/> at the SIMD width <paramref name="path"/> resolves to.</summary>
    internal static void Dispatch<TJob>(KernelPath path, TJob job)
        where TJob : IPanelJob
    {
        switch (Lanes.Resolve(path))
        {
            case KernelPath.Vector512:
                job.Run<Lanes512, Vector512<float>>();
                break;
            case KernelPath.Vector256:
                job.Run<Lanes256, Vector256<float>>();
                break;
            case KernelPath.Vector128:
                job.Run<Lanes128, Vector128<float>>();
                break;
            default:
                job.Run<LanesScalar, float>();
                break;
        }
    }

    /// <summary>The calling thread's workspace, sized for panels of <paramref name="p"/> over key blocks [blockStart, blockEnd).</summary>
    internal static Workspace WorkspaceFor(AttentionProblem p, int blockStart, int blockEnd)
    {
        int depth = KeyPack.FeatureDepth(p);
        int bp = (Math.Min(p.BlockSize, Math.Max(p.KeySeq, 1)) + 15) & ~15;
        int slots = (2 * CanonicalTree.Height(Math.Max(blockEnd - blockStart, 1))) + 4;
        return Workspace.For(depth, bp, PanelKernelShape.PanelRows, p.PartialWidth, slots);
    }

    /// <summary>Kernel work written once for every SIMD width, specialised by <see cref="Dispatch"/>.</summary>
    internal interface IPanelJob
    {
        void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged;
    }

    /// <summary>Computes a panel over the blocks it sees (from <see cref="Keys"/>, or packing them as it goes without), evaluates the tree and finalizes the rows.</summary>
    private readonly record struct FinishPanel(AttentionProblem P, KeyPack? Keys, AttentionTensor Output, float[] Lse, float[]? Entropy, int B, int H, int RowStart, int Rows) : IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
        {
            var (first, end) = P.VisibleBlocks(B, RowStart, Rows);
            var ws = WorkspaceFor(P, first, end);
            int count = PanelKernel<TL, TV>.Run(P, ws, Keys, B, H, RowStart, Rows, first, end);
            var self = this;
            int root = CanonicalTree.Evaluate(P.BlockCount, ws.Nodes.AsSpan(0, count), (a, c) =>
            {
                PanelKernel<TL, TV>.MergeSlots(ws, a, c, self.Rows);
                return a;
            });

            int dv = P.ValueDim;
            var outSpan = Output.Data.Span;
            long rowBase = (((long)B * P.Heads) + H) * P.QuerySeq;
            for (int r = 0; r < Rows; r++)
            {
                long row = rowBase + RowStart + r;
                var dst = outSpan.Slice((int)(row * dv), dv);
                if (root < 0)
                {
                    dst.Clear();
                    Lse[row] = float.NegativeInfinity;
                    if (Entropy is not null)
                    {
                        Entropy[row] = 0f;
                    }

                    continue;
                }

                int at = ws.Index(root, r);
                var o = ws.RowO(root, r);
                PartialMath.Finalize(ws.StackM[at], ws.StackL[at], o[..dv], dst, out Lse[row]);
                if (Entropy is not null)
                {
                    Entropy[row] = PartialMath.Entropy(ws.StackL[at], o[dv], Lse[row]);
                }
            }
        }
    }

    /// <summary>
    /// Where a panel's tree nodes land: row r of node n at <c>M[((FirstSlot + n)·Rows) + row]</c> (and
    /// L; o at that index times the partial width), the panel's rows starting at row <c>SetRow</c>.
    /// </summary>
    private readonly record struct PartialTarget(float[] M, float[] L, float[] O, int FirstSlot, int Rows, int Nodes)
    {
        public static PartialTarget Of(PartialSet set) => new(set.M, set.L, set.O, 0, set.Rows, set.Nodes.Length);
    }

    /// <summary>
    /// Computes a panel and copies its tree nodes to <see cref="Set"/>; without <see cref="Keys"/> the
    /// panel reads the problem's key/value cache, or without one packs its keys as it goes (see <see cref="PanelKernel{TL, TV}.Run"/>).
    /// </summary>
    private readonly record struct CollectPanel(AttentionProblem P, KeyPack? Keys, PartialTarget Set, int B, int H, int RowStart, int SetRow, int Rows, int First, int End, int HeadRows = 0) : IPanelJob
    {
        public void Run<TL, TV>()
            where TL : ILanes<TV>
            where TV : unmanaged
        {
            var ws = WorkspaceFor(P, First, End);
            int count = PanelKernel<TL, TV>.Run(P, ws, Keys, B, H, RowStart, Rows, First, End, HeadRows);
            if (count != Set.Nodes)
            {
                throw new InvalidOperationException($"panel produced {count} tree nodes where the range decomposes into {Set.Nodes}");
            }

            int dv = P.PartialWidth;
            for (int n = 0; n < count; n++)
            {
                for (int r = 0; r < Rows; r++)
                {
                    int at = ws.Index(n, r);
                    int dst = ((Set.FirstSlot + n) * Set.Rows) + SetRow + r;
                    Set.M[dst] = ws.StackM[at];
                    Set.L[dst] = ws.StackL[at];

                    // An identity row's o is never read by a merge, but zeroing it makes a shard's
                    // partials the same bits wherever it is computed (audits compare them).
                    if (float.IsNegativeInfinity(ws.StackM[at]))
                    {
                        Set.O.AsSpan(dst * dv, dv).Clear();
                    }
                    else
                    {
                        ws.RowO(n, r).CopyTo(Set.O.AsSpan(dst * dv, dv));
                    }
                }
            }
        }
    }
}
