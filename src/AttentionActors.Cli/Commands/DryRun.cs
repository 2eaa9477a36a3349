using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention run … --dry-run</c>: the plan without computing or allocating the tensors — shards,
/// rows × key blocks each, bytes per message (shard in, partials back, rows out), total bytes moved,
/// and the estimated time per worker at the kernel speed measured here.
/// </summary>
internal static class DryRun
{
    private const int ListedShards = 12;

    /// <summary>
    /// Bytes of every shard's input and partials, and of the job's finished rows: what crosses a
    /// cluster's data plane. A row is sent to the client once, however many key ranges its shards cut.
    /// </summary>
    public static long BytesMoved(AttentionGeometry g, ShardPlan plan)
    {
        var visible = new Visibility(g);
        return plan.Shards.Select(s => Messages(visible, s)).Sum(m => m.In + m.Partials) + RowsOut(g, plan);
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

    public static int Print(AttentionGeometry g, ShardPlan plan, JobEstimate estimate, int workers, long maxShardBytes, TextWriter stdout)
    {
        var inv = CultureInfo.InvariantCulture;
        var shards = plan.Shards;
        var visible = new Visibility(g);
        var sizes = shards.Select(s => Messages(visible, s)).ToList();
        long moved = sizes.Sum(m => m.In + m.Partials) + RowsOut(g, plan);
        stdout.WriteLine(string.Create(inv, $"dry run: Q {g.QueryShape}, K {g.KeyShape}, V {g.ValueShape}; block {g.BlockSize}, {g.BlockCount} key blocks"));
        stdout.WriteLine(string.Create(inv, $"dry run: {shards.Count} shards on {workers} workers, shard budget {JobEstimate.Size(maxShardBytes)}, imbalance {plan.Imbalance:F3} (busiest worker over the mean)"));
        if (shards.Count > 0)
        {
            stdout.WriteLine(string.Create(inv, $"dry run: rows per shard {Range(shards.Select(s => (double)s.RowCount))}; key blocks per shard {Range(shards.Select(s => (double)(s.BlockEnd - s.BlockStart)))}"));
            stdout.WriteLine(string.Create(inv, $"dry run: bytes per message: shard in {Range(sizes.Select(m => (double)m.In), bytes: true)}, partials back {Range(sizes.Select(m => (double)m.Partials), bytes: true)}, rows out {Range(sizes.Select(m => (double)m.Rows), bytes: true)}"));
        }

        stdout.WriteLine(string.Create(inv, $"dry run: {JobEstimate.Size(moved)} moved in all, {moved / Math.Max(plan.TotalFlops, 1):G3} bytes per FLOP; {plan.TotalFlops / 1e9:G4} GFLOP visible"));
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

        stdout.WriteLine(string.Create(inv, $"dry run: memory needed about {JobEstimate.Size(estimate.NeededBytes)} ({estimate.DescribeNeed()}); {JobEstimate.Size(estimate.AvailableBytes)} available{(estimate.Fits ? "" : " — too much: the run would be refused")}"));
        stdout.WriteLine("| shard | batch | head | rows | key blocks | GFLOP | shard in | partials back | rows out |");
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
