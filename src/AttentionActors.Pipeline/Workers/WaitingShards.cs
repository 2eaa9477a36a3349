namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// One client's waiting shards in the queue: re-issued and homeless ones in order (re-issued first),
/// and each home node's in plan order. A node takes its own first, top rows of a key head first; once a job's shards have all
/// arrived, a node with none of its own left steals the shard of another node whose K/V blocks its
/// block store lacks the fewest of. Every block a thief fetches is a block the plan did not count,
/// so the cost of a steal is those blocks alone (Q rows are fetched by whoever computes the shard).
/// Under a causal mask that is a low-row shard, or one of a head the thief already works on: taking
/// a head's rows from the bottom costs the blocks up to the highest row taken, where taking its top
/// rows costs the whole head. Ties go to a head the thief holds, then to more FLOPs, then to the
/// node with the most left, at the far end of its stretch.
/// </summary>
internal sealed class WaitingShards
{
    private readonly LinkedList<ComputeShard> any = new();
    private readonly Dictionary<string, LinkedList<ComputeShard>> byHome = [];

    /// <summary>For each node, the blocks [lo, hi) of each (job, batch, key head) handed to it: what its block store holds, as one interval.</summary>
    private readonly Dictionary<string, Dictionary<(JobId Job, int Batch, int KvHead), (int Lo, int Hi)>> held = [];

    public int Count { get; private set; }

    public IEnumerable<ComputeShard> All => any.Concat(byHome.Values.SelectMany(l => l));

    public void Add(ComputeShard work)
    {
        Count++;
        if (work.Attempt > 1)
        {
            any.AddFirst(work);
        }
        else if (work.Home.Length == 0)
        {
            any.AddLast(work);
        }
        else
        {
            if (!byHome.TryGetValue(work.Home, out var mine))
            {
                byHome[work.Home] = mine = new LinkedList<ComputeShard>();
            }

            mine.AddLast(work);
        }
    }

    /// <summary>
    /// The shard a worker on <paramref name="node"/> takes next, removed: the first re-issued or
    /// homeless one it may take (<paramref name="eligible"/>), else the first of its node's own, else
    /// — once all of that job's shards are here (<paramref name="sent"/>) — the cheapest steal from a
    /// node with more than one left or not <paramref name="live"/> (its last one it takes itself
    /// soon). Null when there is none it may take.
    /// </summary>
    public ComputeShard? Take(string node, Func<ComputeShard, bool> eligible, Func<JobId, bool> sent, Func<string, bool> live)
    {
        var work = Choose(node, eligible, sent, live);
        if (work is not null)
        {
            if (!held.TryGetValue(node, out var blocks))
            {
                held[node] = blocks = [];
            }

            var key = KeyOf(work);
            var s = work.Shard;
            blocks[key] = blocks.TryGetValue(key, out var had) ? (Math.Min(had.Lo, s.BlockStart), Math.Max(had.Hi, s.BlockEnd)) : (s.BlockStart, s.BlockEnd);
        }

        return work;
    }

    public void RemoveJob(JobId job)
    {
        foreach (var blocks in held.Values)
        {
            foreach (var key in blocks.Keys.Where(k => k.Job == job).ToList())
            {
                blocks.Remove(key);
            }
        }

        foreach (var list in byHome.Values.Prepend(any))
        {
            for (var entry = list.First; entry is not null;)
            {
                var next = entry.Next;
                if (entry.Value.Job == job)
                {
                    Remove(list, entry);
                }

                entry = next;
            }
        }
    }

    private static (JobId Job, int Batch, int KvHead) KeyOf(ComputeShard work) => (work.Job, work.Shard.Batch, work.Shard.Head / work.Geometry.GroupSize);

    private ComputeShard? Choose(string node, Func<ComputeShard, bool> eligible, Func<JobId, bool> sent, Func<string, bool> live)
    {
        for (var entry = any.First; entry is not null; entry = entry.Next)
        {
            if (eligible(entry.Value))
            {
                return Remove(any, entry);
            }
        }

        if (byHome.TryGetValue(node, out var mine) && mine.First is { } first)
        {
            // Within its first (batch, key head) a node takes the top rows first (Locality.TakeOrder):
            // under a causal mask the largest shards, and the ones a thief would pay a whole head for,
            // so a thief starting from the bottom meets the owner in the middle instead of racing it to the top.
            var key = KeyOf(first.Value);
            var last = first;
            while (last.Next is { } next && KeyOf(next.Value) == key)
            {
                last = next;
            }

            return Remove(mine, last);
        }

        held.TryGetValue(node, out var blocks);
        LinkedList<ComputeShard>? bestList = null;
        LinkedListNode<ComputeShard>? best = null;
        (long Missing, bool Held, double Flops) bestCost = default;

        // Richest stretch first and each from its far end, so that among equal costs those win.
        foreach (var (home, list) in byHome.Where(h => h.Key != node && (h.Value.Count > 1 || !live(h.Key))).OrderByDescending(h => h.Value.Count).ThenBy(h => h.Key, StringComparer.Ordinal))
        {
            for (var entry = list.Last; entry is not null; entry = entry.Previous)
            {
                if (!sent(entry.Value.Job))
                {
                    continue;
                }

                var cost = Cost(entry.Value, blocks);
                if (best is null || Cheaper(cost, bestCost))
                {
                    (bestList, best, bestCost) = (list, entry, cost);
                }
            }
        }

        return best is null ? null : Remove(bestList!, best);
    }

    /// <summary>K/V values a node holding <paramref name="blocks"/> must fetch for <paramref name="work"/>, whether it holds any of that head, and the shard's FLOPs.</summary>
    private static (long Missing, bool Held, double Flops) Cost(ComputeShard work, Dictionary<(JobId, int, int), (int Lo, int Hi)>? blocks)
    {
        var s = work.Shard;
        int missing = s.BlockEnd - s.BlockStart;
        bool holds = false;
        if (blocks is not null && blocks.TryGetValue(KeyOf(work), out var had))
        {
            // Blocks below and above the held interval are missing. The interval is the hull of what
            // the node was handed: a gap inside it counts as held, which can only make a steal look
            // cheaper than it is (bytes, never bits).
            holds = true;
            missing = Math.Max(0, Math.Min(s.BlockEnd, had.Lo) - s.BlockStart) + Math.Max(0, s.BlockEnd - Math.Max(s.BlockStart, had.Hi));
        }

        var g = work.Geometry;
        return ((long)missing * g.BlockSize * (g.KeyDim + g.ValueDim), holds, s.Flops);
    }

    private static bool Cheaper((long Missing, bool Held, double Flops) a, (long Missing, bool Held, double Flops) b)
        => a.Missing != b.Missing ? a.Missing < b.Missing
            : a.Held != b.Held ? a.Held
            : a.Flops > b.Flops;

    private ComputeShard Remove(LinkedList<ComputeShard> list, LinkedListNode<ComputeShard> entry)
    {
        list.Remove(entry);
        Count--;
        return entry.Value;
    }
}
