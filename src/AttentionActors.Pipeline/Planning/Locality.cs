using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// Where a plan's shards should run in a cluster: each worker node is given one contiguous stretch
/// of the shards in locality order — batch, key head, query head, rows, key blocks — holding its
/// share of the FLOPs by its threads. A node then works on a few heads, Ulysses-style, and its
/// block store fetches each of their K/V blocks once; a head split between two nodes costs its
/// K/V twice at most. The queue hands a shard to its home node first (<see cref="TakeOrder"/>); a node
/// that runs dry takes the shard whose blocks it lacks the fewest of, at the cost of fetching them.
/// </summary>
public static class Locality
{
    /// <summary><paramref name="shards"/> in locality order.</summary>
    public static List<Shard> Ordered(AttentionGeometry g, IEnumerable<Shard> shards)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(shards);
        return [.. shards.OrderBy(s => s.Batch).ThenBy(s => s.Head / g.GroupSize).ThenBy(s => s.Head).ThenBy(s => s.RowStart).ThenBy(s => s.BlockStart)];
    }

    /// <summary>
    /// <paramref name="shards"/> in the order a node takes its own: locality order, reversed within
    /// each (batch, key head) — its top rows first, leaving the bottom rows, which cost a node that
    /// runs dry the fewest K/V blocks, to the end.
    /// </summary>
    public static List<Shard> TakeOrder(AttentionGeometry g, IEnumerable<Shard> shards)
    {
        var ordered = Ordered(g, shards);
        int start = 0;
        for (int i = 1; i <= ordered.Count; i++)
        {
            if (i == ordered.Count || ordered[i].Batch != ordered[start].Batch || ordered[i].Head / g.GroupSize != ordered[start].Head / g.GroupSize)
            {
                ordered.Reverse(start, i - start);
                start = i;
            }
        }

        return ordered;
    }

    /// <summary>
    /// The home node of each shard, indexed by shard id: an index into <paramref name="threads"/>,
    /// the worker threads of each node. A shard belongs to the node whose share of the cumulative
    /// FLOPs holds the shard's midpoint.
    /// </summary>
    public static int[] Homes(AttentionGeometry g, ShardPlan plan, IReadOnlyList<int> threads)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(threads);
        if (threads.Count == 0 || threads.Any(t => t < 1))
        {
            throw new ArgumentException($"homes need one or more nodes of one or more threads each, not [{string.Join(", ", threads)}]", nameof(threads));
        }

        var homes = new int[plan.Shards.Count];
        double total = plan.Shards.Sum(s => s.Flops);
        double perThread = total / threads.Sum();
        double done = 0, end = threads[0] * perThread;
        int node = 0;
        foreach (var s in Ordered(g, plan.Shards))
        {
            double middle = done + (s.Flops / 2);
            while (middle > end && node < threads.Count - 1)
            {
                node++;
                end += threads[node] * perThread;
            }

            homes[s.Id] = node;
            done += s.Flops;
        }

        return homes;
    }
}
