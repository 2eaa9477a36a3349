using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;

namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// Splits a job into shards. It starts from whole heads (no cross-shard merge needed, as
/// DeepSpeed-Ulysses), drops (query, key block) ranges that masks hide completely, then splits the
/// largest shard until every shard fits the byte budget and the largest-first deal over the workers
/// is within <see cref="PlanOptions.MaxImbalance"/>. A split cuts whichever side weighs more in bytes:
/// query rows (Q in, output out) or key blocks (K and V in, the split-KV of Flash-Decoding and Tree
/// Attention), at the point that halves the visible work.
/// </summary>
public static class ShardPlanner
{
    private const int MaxNodes = 64;

    public static ShardPlan Plan(AttentionProblem problem, int workers, PlanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        return Plan(problem.Geometry, workers, options);
    }

    /// <summary>Plans from the geometry alone: no tensor is read.</summary>
    public static ShardPlan Plan(AttentionGeometry problem, int workers, PlanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        options ??= new PlanOptions();
        var visible = new Visibility(problem);
        // Phase 1: split the largest oversized shard until every shard fits the byte budget. A
        // priority queue keeps this O(S log S) in the shard count S (plans reach tens of thousands).
        var kept = new HashSet<Draft>();
        var oversized = new PriorityQueue<Draft, long>(Comparer<long>.Create((x, y) => y.CompareTo(x)));
        void Keep(Draft? draft)
        {
            if (draft is not null && kept.Add(draft) && draft.Bytes > options.MaxShardBytes)
            {
                oversized.Enqueue(draft, draft.Bytes);
            }
        }

        for (int b = 0; b < problem.Batch; b++)
        {
            for (int h = 0; h < problem.Heads; h++)
            {
                Keep(Trimmed(visible, new Draft(b, h, 0, problem.QuerySeq, 0, problem.BlockCount), options));
            }
        }

        while (oversized.Count > 0 && kept.Count < options.MaxShards)
        {
            var target = oversized.Dequeue();
            var parts = Split(visible, target, options)
                ?? throw new AttentionInputException($"a single query row against one key block needs {target.Bytes:N0} bytes, more than the {options.MaxShardBytes:N0}-byte shard budget; raise the budget or lower the block size");
            kept.Remove(target);
            foreach (var part in parts)
            {
                Keep(Trimmed(visible, part, options));
            }
        }

        // The byte budget bounds every shard's input and partials on the wire and in a worker's memory: a plan that cannot keep to it is refused, never sent.
        if (oversized.Count > 0)
        {
            throw new AttentionInputException($"keeping every shard within {options.MaxShardBytes:N0} bytes needs more than {options.MaxShards:N0} shards (the plan's limit); raise the shard limit (--max-shards) or the budget, or split the job by heads");
        }

        // Phase 2: split the shards with the most work until the largest-first deal is balanced.
        // Each round re-deals every shard (O(S log S)), so a round splits the largest 1/64 of them
        // at once: a million-shard plan takes a few hundred rounds instead of one per split.
        var shards = kept.ToList();
        var settled = new HashSet<Draft>();
        while (shards.Count < options.MaxShards)
        {
            if (Imbalance(shards, workers) <= options.MaxImbalance && shards.Count >= Math.Min(workers, MaxUnits(problem)))
            {
                break;
            }

            int batch = Math.Min(Math.Max(1, shards.Count / 64), options.MaxShards - shards.Count);
            var targets = shards.Where(s => !settled.Contains(s)).OrderByDescending(s => s.Pairs).Take(batch).ToList();
            if (targets.Count == 0)
            {
                break;
            }

            var split = new HashSet<Draft>();
            foreach (var target in targets)
            {
                if (Split(visible, target, options) is not { } parts)
                {
                    settled.Add(target);
                    continue;
                }

                split.Add(target);
                foreach (var part in parts)
                {
                    if (Trimmed(visible, part, options) is { } trimmed)
                    {
                        shards.Add(trimmed);
                    }
                }
            }

            shards.RemoveAll(split.Contains);
        }

        // Workers take shards in this order. Among equal work, the query heads that share a K/V head
        // (grouped-query attention) follow each other on the same rows and key blocks, so the
        // second to last of them find those keys and values in the caches instead of memory.
        var ordered = shards.OrderByDescending(s => s.Pairs).ThenBy(s => s.Batch).ThenBy(s => s.Head / problem.GroupSize).ThenBy(s => s.RowStart).ThenBy(s => s.BlockStart).ThenBy(s => s.Head).ToList();
        var result = ordered.Select((s, i) => new Shard(i, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd, s.Pairs, Flops(problem, s.Pairs), s.Bytes)).ToList();
        return new ShardPlan(result, workers, Deal(result.Select(s => s.Flops), workers));
    }

    /// <summary>
    /// FLOPs per worker when loads are dealt largest first to the least-loaded worker (the lowest
    /// numbered among equals). The workers wait in a heap, so a deal is O(S log S + S log W): a plan
    /// re-deals every shard each round, and a scan of 1024 workers per shard made large plans crawl.
    /// </summary>
    public static double[] Deal(IEnumerable<double> loads, int workers)
    {
        var bins = new double[workers];
        var least = new PriorityQueue<int, (double Load, int Worker)>(workers);
        for (int w = 0; w < workers; w++)
        {
            least.Enqueue(w, (0, w));
        }

        foreach (double load in loads.OrderByDescending(x => x))
        {
            int w = least.Dequeue();
            bins[w] += load;
            least.Enqueue(w, (bins[w], w));
        }

        return bins;
    }

    private static double Imbalance(List<Draft> shards, int workers)
    {
        var bins = Deal(shards.Select(s => (double)s.Pairs), workers);
        double total = bins.Sum();
        return total == 0 ? 1 : bins.Max() / (total / workers);
    }

    private static int MaxUnits(AttentionGeometry p) => (int)Math.Min(int.MaxValue, (long)p.Batch * p.Heads * Math.Max(p.QuerySeq, 1) * Math.Max(p.BlockCount, 1));

    private static double Flops(AttentionGeometry p, long pairs) => 2.0 * pairs * (p.KeyDim + p.ValueDim);

    /// <summary>
    /// Q rows and K/V blocks in (for a layer job: X rows, the key and value input rows and the head's
    /// weights; with an explicit mask, its rows × keys), the partials of at most ~2·log₂ n tree nodes out, as float32.
    /// </summary>
    public static long Bytes(AttentionGeometry p, int rowCount, int blockStart, int blockEnd)
    {
        long keys = p.KeysIn(blockStart, blockEnd);
        long nodes = Math.Min(CanonicalTree.Decompose(blockStart, blockEnd).Length, MaxNodes);
        long mask = p.Mask is null ? 0 : rowCount * keys;
        return 4 * ((rowCount * (long)RowWidth(p)) + (keys * KeyWidth(p)) + WeightValues(p) + mask + (nodes * rowCount * (p.PartialWidth + 2L)));
    }

    /// <summary>Values of K and V a shard holds at a time when its keys come from a node's block store in chunks: half its budget, at most 8 MiB.</summary>
    private static long KeyChunk(PlanOptions options) => Math.Min(8L << 20, options.MaxShardBytes / 2) / 4;

    /// <summary>Values a shard carries per query row: a Q row, or an X row in a layer job.</summary>
    private static int RowWidth(AttentionGeometry p) => p.Layer?.QueryIn ?? p.KeyDim;

    /// <summary>Values a shard carries per key: K and V rows, or the key (and value) input rows in a layer job.</summary>
    private static int KeyWidth(AttentionGeometry p) => p.Layer is { } l ? l.KeyIn + (l.SeparateValues ? l.ValueIn : 0) : p.KeyDim + p.ValueDim;

    /// <summary>The head's rows of W_q, W_k, W_v and their biases in a layer job; none otherwise.</summary>
    private static long WeightValues(AttentionGeometry p) => p.Layer is { } l ? ((long)p.KeyDim * (l.QueryIn + l.KeyIn + 2)) + ((long)p.ValueDim * (l.ValueIn + 1)) : 0;

    /// <summary>Narrows a draft to the blocks its rows see; null when it has no visible work.</summary>
    private static Draft? Trimmed(Visibility v, Draft d, PlanOptions options)
    {
        var p = v.Geometry;
        if (d.RowCount == 0)
        {
            return null;
        }

        var seen = v.Blocks(d.Batch, d.RowStart, d.RowCount);
        int first = Math.Max(seen.First, d.BlockStart), end = Math.Min(seen.End, d.BlockEnd);
        if (first >= end)
        {
            return null;
        }

        long pairs = v.Pairs(d.Batch, d.RowStart, d.RowCount, first, end);
        if (pairs == 0)
        {
            return null;
        }

        long bytes = options.KeysFromStore
            ? 4 * ((d.RowCount * ((long)RowWidth(p) + ((p.PartialWidth + 2L) * AttentionGeometry.ResultNodes(p.BlockCount, seen, first, end).Length))) + Math.Min((long)p.KeysIn(first, end) * KeyWidth(p), KeyChunk(options)))
            : Bytes(p, d.RowCount, first, end);
        return d with { BlockStart = first, BlockEnd = end, Pairs = pairs, Bytes = bytes };
    }

    private static Draft[]? Split(Visibility v, Draft s, PlanOptions options)
    {
        var p = v.Geometry;
        long rowBytes = (long)s.RowCount * (RowWidth(p) + p.PartialWidth + 2);
        long keyBytes = (long)p.KeysIn(s.BlockStart, s.BlockEnd) * KeyWidth(p);
        keyBytes = options.KeysFromStore ? Math.Min(keyBytes, KeyChunk(options)) : keyBytes;
        bool canKeys = s.BlockEnd - s.BlockStart >= 2;
        bool canRows = s.RowCount >= 2 * options.MinRows || (s.RowCount >= 2 && !canKeys);
        if (canRows && (rowBytes >= keyBytes || !canKeys))
        {
            int cut = RowCut(v, s, options.MinRows);
            return [s with { RowCount = cut - s.RowStart }, s with { RowStart = cut, RowCount = s.RowEnd - cut }];
        }

        if (canKeys)
        {
            int cut = BlockCut(v, s);
            return [s with { BlockEnd = cut }, s with { BlockStart = cut }];
        }

        return null;
    }

    /// <summary>The row that halves the visible pairs, kept ≥ MinRows from both ends and on a multiple of 16 when possible.</summary>
    private static int RowCut(Visibility v, Draft s, int minRows)
    {
        int cut = v.RowReaching(s.Batch, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd, s.Pairs / 2);
        int margin = Math.Min(minRows, s.RowCount / 2);
        int aligned = (cut + 8) & ~15;
        if (aligned - s.RowStart >= margin && s.RowEnd - aligned >= margin)
        {
            cut = aligned;
        }

        return Math.Clamp(cut, s.RowStart + Math.Max(margin, 1), s.RowEnd - Math.Max(margin, 1));
    }

    /// <summary>
    /// The block boundary to cut a draft's key range at. Each maximal aligned subtree of a shard's
    /// key range is one partial per row sent back and merged, so among the cuts that leave each side
    /// at least a quarter of the visible pairs this takes the one whose two sides decompose into the
    /// fewest tree nodes, the nearest to halving the pairs on a tie (blocks [0, 56) are cut at 32,
    /// one node and two, not at 28, three and three).
    /// </summary>
    private static int BlockCut(Visibility v, Draft s)
    {
        var perBlock = VisiblePerBlock(v, s);
        long total = perBlock.Sum();
        long acc = 0;
        int best = -1, bestNodes = int.MaxValue;
        long bestDistance = long.MaxValue;
        int halving = s.BlockEnd - 1;
        for (int k = 0; k < perBlock.Length - 1; k++)
        {
            acc += perBlock[k];
            int cut = s.BlockStart + k + 1;
            if (2 * acc >= total && halving == s.BlockEnd - 1)
            {
                halving = cut;
            }

            if (4 * acc < total || 4 * (total - acc) < total)
            {
                continue;
            }

            int nodes = TreeNodes(s.BlockStart, cut) + TreeNodes(cut, s.BlockEnd);
            long distance = Math.Abs((2 * acc) - total);
            if (nodes < bestNodes || (nodes == bestNodes && distance < bestDistance))
            {
                (best, bestNodes, bestDistance) = (cut, nodes, distance);
            }
        }

        return best >= 0 ? best : halving;
    }

    /// <summary>How many maximal aligned subtrees make blocks [start, end): <see cref="CanonicalTree.Decompose"/>'s count, without allocating.</summary>
    internal static int TreeNodes(int start, int end)
    {
        int count = 0;
        while (start < end)
        {
            // The largest power of two that start is a multiple of (any, for 0) and that fits before end.
            int size = start == 0 ? 1 << 30 : start & -start;
            while (size > end - start)
            {
                size >>= 1;
            }

            start += size;
            count++;
        }

        return count;
    }

    /// <summary>
    /// Visible (query, key) pairs per block of the draft, in O(rows + blocks): each row's interval
    /// adds its partial edge blocks directly and its full blocks through a difference array (only
    /// the last block of K can be short, and it can only be an edge).
    /// </summary>
    private static long[] VisiblePerBlock(Visibility v, Draft s)
    {
        var p = v.Geometry;
        int blocks = s.BlockEnd - s.BlockStart;
        var perBlock = new long[blocks];
        if (v.Indexed(s.Batch) && blocks < s.RowCount)
        {
            for (int k = 0; k < blocks; k++)
            {
                perBlock[k] = v.Pairs(s.Batch, s.RowStart, s.RowCount, s.BlockStart + k, s.BlockStart + k + 1);
            }

            return perBlock;
        }

        var full = new long[blocks + 1];
        long keyStart = (long)s.BlockStart * p.BlockSize;
        long keyEnd = Math.Min((long)s.BlockEnd * p.BlockSize, p.KeySeq);
        for (int i = s.RowStart; i < s.RowEnd; i++)
        {
            var (lo, hi) = p.VisibleKeys(s.Batch, i);
            long a = Math.Max(lo, keyStart), b = Math.Min(hi, keyEnd);
            if (a >= b)
            {
                continue;
            }

            int first = (int)((a / p.BlockSize) - s.BlockStart);
            int last = (int)(((b - 1) / p.BlockSize) - s.BlockStart);
            if (first == last)
            {
                perBlock[first] += b - a;
                continue;
            }

            perBlock[first] += ((long)(first + s.BlockStart + 1) * p.BlockSize) - a;
            perBlock[last] += b - ((long)(last + s.BlockStart) * p.BlockSize);
            full[first + 1]++;
            full[last]--;
        }

        long running = 0;
        for (int k = 0; k < blocks; k++)
        {
            running += full[k];
            perBlock[k] += running * p.BlockSize;
        }

        return perBlock;
    }

    /// <summary>A shard being planned; <see cref="Pairs"/> and <see cref="Bytes"/> are filled in when it is kept.</summary>
    private sealed record Draft(int Batch, int Head, int RowStart, int RowCount, int BlockStart, int BlockEnd, long Pairs = 0, long Bytes = 0)
    {
        public int RowEnd => RowStart + RowCount;
    }
}
