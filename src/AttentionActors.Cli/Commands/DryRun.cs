using System.Globalization;
using AttentionActors.Cluster.Workers;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention run … --dry-run</c>: the plan without computing or allocating the tensors — shards,
/// rows × key blocks each, bytes per message (shard in, partials back, rows out), total bytes moved
/// on a cluster of a given number of worker nodes, and the estimated time per worker at the kernel speed measured here.
/// </summary>
internal static class DryRun
{
    private const int ListedShards = 12;

    /// <summary>
    /// What crosses a cluster's data plane when the plan runs on worker nodes of <paramref name="nodes"/>
    /// threads each with block stores of <paramref name="storeBytes"/>: the data each node fetches
    /// (<see cref="NodeBytesIn"/>), every shard's partials, and the job's finished rows, each row sent
    /// to the client once however many key ranges its shards cut.
    /// </summary>
    public static long BytesMoved(AttentionGeometry g, ShardPlan plan, IReadOnlyList<int> nodes, long storeBytes)
    {
        var visible = new Visibility(g);
        return NodeBytesIn(g, plan, nodes, storeBytes).Sum() + plan.Shards.Sum(s => Messages(visible, s).Partials) + RowsOut(g, plan);
    }

    /// <summary>
    /// Bytes each worker node fetches: every shard is dealt to its home node (<see cref="Locality"/>)
    /// and the node takes its shards in its order (<see cref="Locality.TakeOrder"/>), fetching the Q rows and K/V blocks its store
    /// does not hold, least recently used evicted first, as <see cref="BlockStore"/> does. Threads
    /// taking shards side by side, and nodes taking shards from each other at the end, move a little more.
    /// Jobs whose shards are fetched whole (explicit masks, layer jobs) fetch every shard's data.
    /// </summary>
    public static long[] NodeBytesIn(AttentionGeometry g, ShardPlan plan, IReadOnlyList<int> nodes, long storeBytes)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var homes = Locality.Homes(g, plan, nodes);
        var bytes = new long[nodes.Count];
        var visible = new Visibility(g);
        var stores = Enumerable.Range(0, nodes.Count).Select(_ => new Lru(storeBytes)).ToArray();
        long blockBytes = 4L * g.BlockSize * (g.KeyDim + g.ValueDim);
        foreach (var s in Locality.TakeOrder(g, plan.Shards))
        {
            int node = homes[s.Id];
            if (!BlockStore.Splits(g))
            {
                bytes[node] += Messages(visible, s).In;
                continue;
            }

            var store = stores[node];
            bytes[node] += store.Touch((0, s.Batch, s.Head, s.RowStart, s.RowCount), 4L * s.RowCount * g.KeyDim);
            int kvHead = s.Head / g.GroupSize;
            for (int k = s.BlockStart; k < s.BlockEnd; k++)
            {
                bytes[node] += store.Touch((1, s.Batch, kvHead, k, 1), k == g.BlockCount - 1 ? 4L * g.KeysIn(k, k + 1) * (g.KeyDim + g.ValueDim) : blockBytes);
            }
        }

        return bytes;
    }

    /// <summary>A block store's bookkeeping without the data: which parts it holds, and what a touch fetches.</summary>
    private sealed class Lru(long budget)
    {
        private readonly Dictionary<(int, int, int, int, int), (LinkedListNode<(int, int, int, int, int)> Node, long Bytes)> held = [];
        private readonly LinkedList<(int, int, int, int, int)> recent = new();
        private long bytes;

        /// <summary>The bytes fetched for <paramref name="part"/>: none when held (it becomes the most recent), else its size.</summary>
        public long Touch((int, int, int, int, int) part, long size)
        {
            if (held.TryGetValue(part, out var entry))
            {
                recent.Remove(entry.Node);
                recent.AddLast(entry.Node);
                return 0;
            }

            held[part] = (recent.AddLast(part), size);
            bytes += size;
            while (bytes > budget && recent.First is { } oldest)
            {
                bytes -= held[oldest.Value].Bytes;
                held.Remove(oldest.Value);
                recent.RemoveFirst();
            }

            return size;
        }
    }

    /// <summary>Output and lse bytes of the rows the plan's shards cover, each (batch, head, row) once.</summary>
    private static long RowsOut(AttentionGeometry g, ShardPlan plan)
    {
        long rows = 0;
        foreach (var head in plan.Shards.GroupBy(s => (s.Batch, s.Head)))
        {
            int end = int.MinValue;
            foreach (var s in head.OrderBy(s => s.RowStart))
            {
                rows += Math.Max(0, s.RowEnd - Math.Max(s.RowStart, end));
                end = Math.Max(end, s.RowEnd);
            }
        }

        return 4 * rows * (g.ValueDim + 1L);
    }

    /// <summary>A job's plan as a cluster's coordinator makes it: K/V from the nodes' block stores where the job allows (<see cref="BlockStore.Splits"/>).</summary>
    public static ShardPlan ClusterPlan(AttentionGeometry g, int workers, PlanOptions options)
        => ShardPlanner.Plan(Pipeline.EmbeddedPipeline.Planning(g), workers, options with { KeysFromStore = BlockStore.Splits(g) });

    /// <summary>Bytes of a job's Q, K and V and of its output and lse, as float32: what bytes moved are measured against.</summary>
    public static long DataBytes(AttentionGeometry g) => 4 * (g.QueryShape.Length + g.KeyShape.Length + g.ValueShape.Length + (g.QueryShape.Length / g.KeyDim * (g.ValueDim + 1)));

    /// <summary>The threads of each of <paramref name="nodes"/> worker nodes sharing <paramref name="workers"/> threads as evenly as they go.</summary>
    public static int[] Spread(int workers, int nodes) => [.. Enumerable.Range(0, nodes).Select(i => (workers / nodes) + (i < workers % nodes ? 1 : 0))];

    /// <summary>The cluster a dry run plans for: worker nodes sharing the workers, each with a block store of <paramref name="StoreBytes"/>.</summary>
    public sealed record Cluster(int Nodes, long StoreBytes);

    /// <summary>
    /// Prints <paramref name="plan"/>. On a <paramref name="cluster"/> it adds the bytes each worker
    /// node fetches and all that crosses the data plane; in one process (null) shards read views of Q,
    /// K and V and nothing crosses a network.
    /// </summary>
    public static int Print(AttentionGeometry g, ShardPlan plan, JobEstimate estimate, int workers, long maxShardBytes, Cluster? cluster, bool singleNode, TextWriter stdout)
    {
        var inv = CultureInfo.InvariantCulture;
        var shards = plan.Shards;
        var visible = new Visibility(g);
        var sizes = shards.Select(s => Messages(visible, s)).ToList();
        stdout.WriteLine(string.Create(inv, $"dry run: Q {g.QueryShape}, K {g.KeyShape}, V {g.ValueShape}; block {g.BlockSize}, {g.BlockCount} key blocks"));
        stdout.WriteLine(cluster is not null
            ? $"dry run: a cluster coordinator's plan: keys and values from the worker nodes' block stores{(BlockStore.Splits(g) ? "" : " (not this job: its shards are fetched whole)")}"
            : singleNode
            ? "dry run: --single-node computes without shards (its threads take query panels); the plan shown is the embedded pipeline's, the same bits; --nodes N or --cluster plans it for a cluster"
            : "dry run: the embedded pipeline's plan, the one this command runs (shards read Q, K and V where they lie, in this process); --nodes N or --cluster plans it for a cluster, with the bytes each worker node fetches");
        stdout.WriteLine(string.Create(inv, $"dry run: {shards.Count} shards on {workers} workers, shard budget {JobEstimate.Size(maxShardBytes)}, imbalance {plan.Imbalance:F3} (busiest worker over the mean)"));
        if (shards.Count > 0)
        {
            stdout.WriteLine(string.Create(inv, $"dry run: rows per shard {Range(shards.Select(s => (double)s.RowCount))}; key blocks per shard {Range(shards.Select(s => (double)(s.BlockEnd - s.BlockStart)))}"));
            stdout.WriteLine(string.Create(inv, $"dry run: bytes per shard: data it reads {Range(sizes.Select(m => (double)m.In), bytes: true)}, partials back {Range(sizes.Select(m => (double)m.Partials), bytes: true)}, rows out {Range(sizes.Select(m => (double)m.Rows), bytes: true)}"));
        }

        if (cluster is not null)
        {
            PrintMoved(g, plan, sizes, workers, cluster, stdout);
        }
        else
        {
            stdout.WriteLine(string.Create(inv, $"dry run: {plan.TotalFlops / 1e9:G4} GFLOP visible; {JobEstimate.Size(sizes.Sum(m => m.Partials))} of partials reach the reducer, in memory"));
        }

        PrintWorkers(plan, estimate, stdout);
        stdout.WriteLine(string.Create(inv, $"dry run: memory needed about {JobEstimate.Size(estimate.NeededBytes)} ({estimate.DescribeNeed()}); {JobEstimate.Size(estimate.AvailableBytes)} available{(estimate.Fits ? "" : " — too much: the run would be refused")}"));
        stdout.WriteLine("| shard | batch | head | rows | key blocks | GFLOP | data read | partials back | rows out |");
        stdout.WriteLine("|---:|---:|---:|---|---|---:|---:|---:|---:|");
        foreach (var (s, m) in shards.Zip(sizes).Take(ListedShards))
        {
            stdout.WriteLine(string.Create(inv, $"| {s.Id} | {s.Batch} | {s.Head} | [{s.RowStart}, {s.RowEnd}) | [{s.BlockStart}, {s.BlockEnd}) | {s.Flops / 1e9:G3} | {m.In:N0} | {m.Partials:N0} | {m.Rows:N0} |"));
        }

        if (shards.Count > ListedShards)
        {
            stdout.WriteLine($"dry run: … and {shards.Count - ListedShards} more shards");
        }

        return 0;
    }

    /// <summary>What crosses a cluster's network: the data each worker node fetches, the partials and the rows out, and how long the busiest link takes.</summary>
    private static void PrintMoved(AttentionGeometry g, ShardPlan plan, List<(long In, long Partials, long Rows)> sizes, int workers, Cluster cluster, TextWriter stdout)
    {
        var inv = CultureInfo.InvariantCulture;
        int nodes = cluster.Nodes;
        var threads = Spread(workers, nodes);
        var nodeIn = NodeBytesIn(g, plan, threads, cluster.StoreBytes);
        long partials = sizes.Sum(m => m.Partials), rowsOut = RowsOut(g, plan);
        long moved = nodeIn.Sum() + partials + rowsOut;
        long data = DataBytes(g);
        stdout.WriteLine(string.Create(inv, $"dry run: on {nodes} worker {(nodes == 1 ? "node" : "nodes")} of {Range(threads.Select(t => (double)t))} threads, block stores of {JobEstimate.Size(cluster.StoreBytes)}: data in per node {Range(nodeIn.Select(b => (double)b), bytes: true)}"));
        stdout.WriteLine(string.Create(inv, $"dry run: {JobEstimate.Size(moved)} moved in all ({JobEstimate.Size(nodeIn.Sum())} data in, {JobEstimate.Size(partials)} partials, {JobEstimate.Size(rowsOut)} rows out): {moved / (double)Math.Max(data, 1):F2}× the {JobEstimate.Size(data)} of Q, K, V, output and lse; {moved / Math.Max(plan.TotalFlops, 1):G3} bytes per FLOP; {plan.TotalFlops / 1e9:G4} GFLOP visible"));
        foreach (double gbps in new[] { 1.0, 10.0 })
        {
            // Every byte crosses a node's link once; the busiest node's link bounds the time.
            long busiest = nodeIn.Max() + (partials / nodes);
            stdout.WriteLine(string.Create(inv, $"dry run: at {gbps:G} GB/s per node: the busiest node's data take {JobEstimate.Duration(TimeSpan.FromSeconds(busiest / (gbps * 1e9)))}; the reducer takes the partials in {JobEstimate.Duration(TimeSpan.FromSeconds(partials / (gbps * 1e9)))}"));
        }
    }

    private static void PrintWorkers(ShardPlan plan, JobEstimate estimate, TextWriter stdout)
    {
        var inv = CultureInfo.InvariantCulture;
        double perThread = estimate.FlopsPerSecond;
        if (plan.WorkerLoads.Count > 8)
        {
            // Many workers: one line, not one per worker.
            var loads = plan.WorkerLoads.Order().ToList();
            string Time(double flops) => JobEstimate.Duration(TimeSpan.FromSeconds(flops / perThread));
            stdout.WriteLine(string.Create(inv, $"dry run: per worker {loads[0] / 1e9:G4} / {loads[loads.Count / 2] / 1e9:G4} / {loads[^1] / 1e9:G4} GFLOP (min / median / max), about {Time(loads[0])} / {Time(loads[loads.Count / 2])} / {Time(loads[^1])} at {perThread / 1e9:F1} GFLOP/s per core"));
        }
        else
        {
            for (int w = 0; w < plan.WorkerLoads.Count; w++)
            {
                stdout.WriteLine(string.Create(inv, $"dry run: worker {w}: {plan.WorkerLoads[w] / 1e9:G4} GFLOP, about {JobEstimate.Duration(TimeSpan.FromSeconds(plan.WorkerLoads[w] / perThread))} at {perThread / 1e9:F1} GFLOP/s per core"));
            }
        }
    }

    /// <summary>Float32 bytes of a shard's data in (Q rows, K and V of its blocks), its partials back (m, l, o per tree node and row: the root alone when it holds every block its rows see) and its finished rows out (o and lse).</summary>
    private static (long In, long Partials, long Rows) Messages(Visibility visible, Shard s)
    {
        var g = visible.Geometry;
        long keys = g.KeysIn(s.BlockStart, s.BlockEnd);
        long nodes = AttentionGeometry.ResultNodes(g.BlockCount, visible.Blocks(s.Batch, s.RowStart, s.RowCount), s.BlockStart, s.BlockEnd).Length;
        return (
            4 * (((long)s.RowCount * g.KeyDim) + (keys * (g.KeyDim + g.ValueDim))),
            4 * nodes * s.RowCount * (g.ValueDim + 2L),
            4L * s.RowCount * (g.ValueDim + 1));
    }

    private static string Range(IEnumerable<double> values, bool bytes = false)
    {
        var sorted = values.Order().ToList();
        string Show(double x) => bytes ? JobEstimate.Size((long)x) : x.ToString("G6", CultureInfo.InvariantCulture);
        return $"{Show(sorted[0])} / {Show(sorted[sorted.Count / 2])} / {Show(sorted[^1])} (min / median / max)";
    }
}
