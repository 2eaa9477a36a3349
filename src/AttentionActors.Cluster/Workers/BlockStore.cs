using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Cluster.Workers;

/// <summary>
/// How a worker node fetches part of a job's tensors from the job's store: the data of
/// <paramref name="part"/>, a shard-shaped place with either rows (Q only) or key blocks (K and V only).
/// </summary>
public delegate ShardInput PartFetcher(ComputeShard work, Shard part, CancellationToken cancellationToken);

/// <summary>
/// A worker node's store of the tensors its shards fetched, kept for the job's lifetime: K and V per
/// key block of each (batch, key head), and Q per row range. A shard fetches only the blocks the node
/// does not hold yet, in contiguous runs; shards of the same head dealt to the same node fetch its
/// K/V once. The store keeps at most its budget, evicting the least recently used parts (a shard
/// that still reads an evicted part keeps its own reference; the next shard fetches it again), and
/// drops a job's parts when the job ends. Two shards that need the same missing part wait for one
/// fetch. Jobs with an explicit mask, layer jobs and the inspection passes fetch whole shards as
/// before: their data does not split into shared blocks.
/// </summary>
public sealed class BlockStore
{
    /// <summary>Largest K/V run one request asks for: a frame well within the data plane's limit.</summary>
    public const long MaxRunBytes = 8 << 20;

    private readonly object gate = new();
    private readonly Dictionary<PartKey, Part> parts = [];
    private readonly LinkedList<PartKey> recent = new();
    private readonly EndedJobs ended = new();
    private readonly PartFetcher fetch;
    private long bytes;
    private long fetched;
    private long hits;

    /// <param name="budgetBytes">Bytes of tensors the store may hold; 0 keeps nothing beyond the shard that fetched it.</param>
    /// <param name="fetch">Fetches part of a job's tensors from its store.</param>
    public BlockStore(long budgetBytes, PartFetcher fetch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        ArgumentNullException.ThrowIfNull(fetch);
        Budget = budgetBytes;
        this.fetch = fetch;
    }

    public long Budget { get; }

    /// <summary>Bytes held now; never above <see cref="Budget"/>.</summary>
    public long Bytes
    {
        get
        {
            lock (gate)
            {
                return bytes;
            }
        }
    }

    /// <summary>Parts fetched from stores, and parts found here, since the node started.</summary>
    public (long Fetched, long Hits) Counts
    {
        get
        {
            lock (gate)
            {
                return (fetched, hits);
            }
        }
    }

    /// <summary>Jobs with parts here now.</summary>
    public IReadOnlyList<JobId> Jobs
    {
        get
        {
            lock (gate)
            {
                return [.. parts.Keys.Select(k => k.Job).Distinct()];
            }
        }
    }

    /// <summary>Whether a shard of <paramref name="g"/> is assembled from parts (else fetched whole).</summary>
    public static bool Splits(AttentionGeometry g) => g.Pass == JobPass.Attention && g.Layer is null && g.Mask is null;

    /// <summary>A shard's input: its Q rows and the K/V of its blocks, from this store where held, fetched where not.</summary>
    public ShardInput Fetch(ComputeShard work, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        var g = work.Geometry;
        var s = work.Shard;
        if (!Splits(g))
        {
            return fetch(work, s, cancellationToken);
        }

        int kvHead = s.Head / g.GroupSize;
        var rowsKey = new PartKey(work.Job, s.Batch, s.Head, s.RowStart, s.RowCount, Rows: true);
        var blockKeys = Enumerable.Range(s.BlockStart, s.BlockEnd - s.BlockStart).Select(k => new PartKey(work.Job, s.Batch, kvHead, k, 1, Rows: false)).ToList();
        var mine = new List<(PartKey Key, Part Part)>();
        var all = new List<Part>();
        lock (gate)
        {
            foreach (var key in blockKeys.Prepend(rowsKey))
            {
                if (parts.TryGetValue(key, out var part))
                {
                    hits++;
                    if (part.Node is { } node)
                    {
                        recent.Remove(node);
                        recent.AddLast(node);
                    }
                }
                else
                {
                    part = parts[key] = new Part();
                    mine.Add((key, part));
                }

                all.Add(part);
            }
        }

        try
        {
            FetchMissing(work, mine, cancellationToken);
        }
        catch (Exception ex)
        {
            lock (gate)
            {
                foreach (var (key, part) in mine.Where(m => !m.Part.Arrived.Task.IsCompleted))
                {
                    parts.Remove(key);
                    part.Arrived.TrySetException(ex);
                }
            }

            throw;
        }

        var q = all[0].Arrived.Task.GetAwaiter().GetResult();
        int keys = g.KeysIn(s.BlockStart, s.BlockEnd);
        var k = new float[(long)keys * g.KeyDim];
        var v = new float[(long)keys * g.ValueDim];
        long kAt = 0, vAt = 0;
        for (int b = 1; b < all.Count; b++)
        {
            var block = all[b].Arrived.Task.GetAwaiter().GetResult();
            block.K.CopyTo(k.AsMemory((int)kAt));
            block.V.CopyTo(v.AsMemory((int)vAt));
            kAt += block.K.Length;
            vAt += block.V.Length;
        }

        return new ShardInput(g, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd, q.K, k, v);
    }

    /// <summary>
    /// Keys of K/V a shard of <paramref name="g"/> with an estimated <paramref name="shardBytes"/>
    /// computes at a time: an aligned power of two of blocks within half its bytes (and at most
    /// <see cref="MaxRunBytes"/>), at least one block.
    /// </summary>
    public static int ChunkBlocks(AttentionGeometry g, long shardBytes)
    {
        ArgumentNullException.ThrowIfNull(g);
        long blockBytes = 4L * g.BlockSize * (g.KeyDim + g.ValueDim);
        long blocks = Math.Max(1, Math.Min(MaxRunBytes, shardBytes / 2) / blockBytes);
        return (int)Math.Min(1L << 30, 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)blocks)));
    }

    /// <summary>Whether <paramref name="work"/>'s shard is computed chunk by chunk (<see cref="ComputeInChunks"/>), so never fetched whole.</summary>
    public static bool Chunks(ComputeShard work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var g = work.Geometry;
        var s = work.Shard;
        var (first, end) = g.VisibleBlocks(s.Batch, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd);
        return Splits(g) && end - first > ChunkBlocks(g, s.Bytes);
    }

    /// <summary>
    /// Computes a shard whose K/V are more than one chunk (<see cref="ChunkBlocks"/>), one aligned
    /// chunk at a time from this store, merging the chunks' partials up the canonical tree as they
    /// come (<see cref="TreeStack"/>): the shard's nodes, or its rows' root when it holds every block
    /// they see, with the bits of computing it whole, while K/V of one chunk is held at a time.
    /// Returns null for a shard that fits one chunk or is not assembled from parts.
    /// </summary>
    public PartialSet? ComputeInChunks(ComputeShard work, ShardComputer compute, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(compute);
        var g = work.Geometry;
        var s = work.Shard;
        if (!Chunks(work))
        {
            return null;
        }

        int chunk = ChunkBlocks(g, s.Bytes);
        var seen = g.VisibleBlocks(s.Batch, s.RowStart, s.RowCount);
        int first = Math.Max(seen.First, s.BlockStart), end = Math.Min(seen.End, s.BlockEnd);

        var stack = new TreeStack();
        foreach (var node in CanonicalTree.Decompose(first, end))
        {
            // A node is cut into aligned pieces of one chunk: each a subtree, pushed left to right.
            long size = Math.Min(node.End - node.Start, chunk);
            for (long at = node.Start; at < node.End; at += size)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var piece = s with { BlockStart = (int)at, BlockEnd = (int)(at + size) };
                var input = Fetch(work with { Shard = piece }, cancellationToken);
                stack.Push(compute(input, piece, work.Attempt, cancellationToken));
            }
        }

        var nodes = stack.ToSet();
        return AttentionGeometry.ResultNodes(g.BlockCount, seen, s.BlockStart, s.BlockEnd) is [var only] && only != nodes.Nodes[0]
            ? CanonicalTree.Reduce(g.BlockCount, [nodes])
            : nodes;
    }

    /// <summary>Forgets every part of <paramref name="job"/> (it ended).</summary>
    public void Forget(JobId job)
    {
        lock (gate)
        {
            ended.Add(job);
            foreach (var key in parts.Keys.Where(k => k.Job == job).ToList())
            {
                Drop(key);
            }
        }
    }

    /// <summary>Fetches the parts this call added: the rows, then runs of adjacent blocks, each run one request.</summary>
    private void FetchMissing(ComputeShard work, List<(PartKey Key, Part Part)> mine, CancellationToken cancellationToken)
    {
        var g = work.Geometry;
        var s = work.Shard;
        int blockBytes = 4 * g.BlockSize * (g.KeyDim + g.ValueDim);
        int perRun = (int)Math.Max(1, MaxRunBytes / blockBytes);
        for (int i = 0; i < mine.Count;)
        {
            var (key, part) = mine[i];
            if (key.Rows)
            {
                var rows = fetch(work, s with { BlockStart = 0, BlockEnd = 0 }, cancellationToken);
                Arrive(key, part, new Tensors(rows.Q, ReadOnlyMemory<float>.Empty, 4L * rows.Q.Length));
                i++;
                continue;
            }

            int run = 1;
            while (i + run < mine.Count && run < perRun && mine[i + run].Key.Start == key.Start + run)
            {
                run++;
            }

            var data = fetch(work, s with { Head = key.Head * g.GroupSize, RowStart = 0, RowCount = 0, BlockStart = key.Start, BlockEnd = key.Start + run }, cancellationToken);
            long kAt = 0, vAt = 0;
            for (int j = 0; j < run; j++)
            {
                int blockKeys = g.KeysIn(key.Start + j, key.Start + j + 1);
                // Copied out of the run, so an evicted block frees its memory whatever its neighbours do.
                ReadOnlyMemory<float> kb = data.K.Slice((int)kAt, blockKeys * g.KeyDim).ToArray();
                ReadOnlyMemory<float> vb = data.V.Slice((int)vAt, blockKeys * g.ValueDim).ToArray();
                kAt += kb.Length;
                vAt += vb.Length;
                Arrive(mine[i + j].Key, mine[i + j].Part, new Tensors(kb, vb, 4L * (kb.Length + vb.Length)));
            }

            i += run;
        }
    }

    /// <summary>A part has arrived: it is counted, kept as the most recent, and the oldest go while the store is over budget.</summary>
    private void Arrive(PartKey key, Part part, Tensors data)
    {
        lock (gate)
        {
            fetched++;
            part.Arrived.TrySetResult(data);
            if (!parts.TryGetValue(key, out var held) || held != part)
            {
                // Its job ended while it was on the way: it serves the shard that asked, and goes.
                return;
            }

            if (ended.Contains(key.Job))
            {
                // Fetched for a shard that began after its job ended.
                parts.Remove(key);
                return;
            }

            part.Bytes = data.Bytes;
            part.Node = recent.AddLast(key);
            bytes += data.Bytes;
            while (bytes > Budget && recent.First is { } oldest)
            {
                Drop(oldest.Value);
            }
        }
    }

    private void Drop(PartKey key)
    {
        if (!parts.Remove(key, out var part))
        {
            return;
        }

        if (part.Node is { } node)
        {
            recent.Remove(node);
            bytes -= part.Bytes;
        }

        // A fetch still on the way completes its waiters, and is then not kept.
        part.Node = null;
    }

    /// <summary>A part's name: Q rows [Start, Start + Count) of (batch, head), or K/V block Start of (batch, key head).</summary>
    private readonly record struct PartKey(JobId Job, int Batch, int Head, int Start, int Count, bool Rows);

    /// <summary>Q rows (in <see cref="K"/>), or one block's K and V; <see cref="Bytes"/> is what the store counts for them.</summary>
    private readonly record struct Tensors(ReadOnlyMemory<float> K, ReadOnlyMemory<float> V, long Bytes);

    private sealed class Part
    {
        public TaskCompletionSource<Tensors> Arrived { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LinkedListNode<PartKey>? Node { get; set; }

        public long Bytes { get; set; }
    }
}
