using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using AttentionActors.Cluster;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Transport;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench --cluster</c>: the embedded pipeline against a local cluster of separate
/// processes — one coordinator+reducer node and <c>--workers</c> single-threaded worker nodes — on
/// a broker of its own (or <c>--broker</c>), runs alternating after a warm-up of each, every result
/// checked bit for bit against single-node. Reports medians and their ratio, bytes moved, each
/// process's peak memory, and how fast a killed worker's shard comes back.
/// </summary>
internal static class ClusterBench
{
    public static async Task<int> RunAsync(int[] seqs, int[] dims, int heads, int workers, int repeat, bool causal, int block, IReadOnlyList<KeyValuePair<string, string?>>? brokerFlags)
    {
        var clock = Stopwatch.StartNew();
        await using var local = brokerFlags is null ? await LocalBroker.StartAsync() : null;
        var broker = brokerFlags is null ? new BrokerOptions { Url = local!.Url } : NodeConfiguration.Load(null, brokerFlags).Broker;
        broker = broker with { Prefix = $"bench-{Guid.NewGuid().ToString("N")[..8]}" };
        Console.WriteLine($"broker {BrokerOptions.Redact(broker.Url)}{(local is null ? "" : $" (started here in {clock.Elapsed.TotalSeconds:F1} s)")}, queue prefix {broker.Prefix}");

        var nodes = new List<Node> { Node.Start(broker, "bench-coordinator", "coordinator,reducer", 1) };
        for (int w = 0; w < workers; w++)
        {
            nodes.Add(Node.Start(broker, $"bench-worker-{w}", "worker", 1));
        }

        try
        {
            await using var client = await ClusterClient.ConnectAsync(broker);
            await WaitForNodes(client, nodes);
            Console.WriteLine($"{Environment.ProcessorCount} cores; embedded: {workers} workers in this process; cluster: 1 coordinator+reducer process and {workers} worker processes of 1 thread; {repeat} alternating runs each");
            Console.WriteLine();
            Console.WriteLine("| N | d | H | mask | embedded GFLOP/s (median) | cluster GFLOP/s (median) | cluster/embedded | client bytes sent + received per job | bytes moved per job (plan) | bytes per FLOP | bits equal |");
            Console.WriteLine("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
            await using var embedded = AttentionCluster.StartEmbedded(new ClusterOptions { Workers = workers });
            bool allEqual = true;
            AttentionProblem? last = null;
            foreach (int n in seqs)
            {
                foreach (int d in dims)
                {
                    var problem = AttentionProblem.Create(PipelineBench.Random("Q", 1, heads, n, d), PipelineBench.Random("K", 2, heads, n, d), PipelineBench.Random("V", 3, heads, n, d), new AttentionOptions { BlockSize = block, Causal = causal });
                    last = problem;
                    double flops = problem.Geometry.VisibleFlops();
                    var single = Attention.Compute(problem);
                    bool equal = PipelineBench.Same(single, await embedded.ComputeAsync(problem)) && PipelineBench.Same(single, await client.ComputeAsync(problem));
                    var embeddedTimes = new List<double>();
                    var clusterTimes = new List<double>();
                    long traffic = 0;
                    for (int r = 0; r < repeat; r++)
                    {
                        var watch = Stopwatch.StartNew();
                        equal &= PipelineBench.Same(single, await embedded.ComputeAsync(problem));
                        embeddedTimes.Add(watch.Elapsed.TotalSeconds);

                        var before = client.Traffic;
                        watch.Restart();
                        equal &= PipelineBench.Same(single, await client.ComputeAsync(problem));
                        clusterTimes.Add(watch.Elapsed.TotalSeconds);
                        traffic = client.Traffic.Sent - before.Sent + client.Traffic.Received - before.Received;
                    }

                    allEqual &= equal;
                    var budget = broker.MaxMessageBytes - (256 << 10);
                    long moved = DryRun.BytesMoved(problem.Geometry, ShardPlanner.Plan(problem.Geometry, workers, new PlanOptions { MaxShardBytes = budget })) + (4 * (problem.Q.Shape.Length + problem.K.Shape.Length + problem.V.Shape.Length));
                    double e = flops / PipelineBench.Median(embeddedTimes) / 1e9;
                    double c = flops / PipelineBench.Median(clusterTimes) / 1e9;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {n} | {d} | {heads} | {(causal ? "causal" : "dense")} | {e:F1} | {c:F1} | {c / e:F3} | {traffic / 1048576.0:F0} MiB | {moved / 1048576.0:F0} MiB | {moved / flops:G3} | {(equal ? "yes" : "NO")} |"));
                }
            }

            Console.WriteLine();
            Console.WriteLine("peak resident memory (VmHWM): " + string.Join(", ", nodes.Select(x => $"{x.Name} {Peak(x.Process.Id)}").Prepend($"client+embedded {Peak(Environment.ProcessId)}")));
            if (last is not null && workers > 1)
            {
                await MeasureRecovery(client, nodes[1], last);
            }

            if (!allEqual)
            {
                Console.Error.WriteLine("bench: a cluster or embedded output differed from single-node");
                return 1;
            }

            return 0;
        }
        finally
        {
            foreach (var node in nodes)
            {
                node.Dispose();
            }
        }
    }

    /// <summary>Kills a worker while it holds a shard and reports how soon the broker hands the shard to another worker, and the job's time.</summary>
    private static async Task MeasureRecovery(ClusterClient client, Node victim, AttentionProblem problem)
    {
        var job = client.ComputeAsync(problem);
        var watch = Stopwatch.StartNew();
        while (!job.IsCompleted && client.Members.FirstOrDefault(m => m.Heartbeat.Node == victim.Name) is not { Heartbeat.InFlight: > 0, Heartbeat.ShardsDone: > 0 })
        {
            await Task.Delay(5);
        }

        if (job.IsCompleted)
        {
            Console.WriteLine("recovery: the job ended before the victim held a shard; not measured");
            return;
        }

        var killed = DateTime.Now;
        victim.Process.Kill();
        await job;
        var redelivered = Node.All.SelectMany(n => n.Lines).Where(l => l.Contains("redelivered", StringComparison.Ordinal)).Select(Node.Stamp).Where(t => t >= killed.AddSeconds(-0.5)).Order().FirstOrDefault();
        Console.WriteLine(redelivered == default
            ? $"recovery: {victim.Name} killed at {watch.Elapsed.TotalSeconds:F2} s into the job; no redelivery logged (its shard had been answered); job done in {watch.Elapsed.TotalSeconds:F2} s"
            : string.Create(CultureInfo.InvariantCulture, $"recovery: {victim.Name} killed while computing; its shard was redelivered to another worker {(redelivered - killed).TotalMilliseconds:F0} ms later; job done in {watch.Elapsed.TotalSeconds:F2} s"));
    }

    private static async Task WaitForNodes(ClusterClient client, List<Node> nodes)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (nodes.Any(n => client.Members.All(m => m.Heartbeat.Node != n.Name)))
        {
            if (DateTime.UtcNow > deadline || nodes.Any(n => n.Process.HasExited))
            {
                throw new InvalidOperationException("bench nodes did not come up:\n" + string.Join("\n", nodes.SelectMany(n => n.Lines.TakeLast(5))));
            }

            await Task.Delay(50);
        }
    }

    private static string Peak(int pid)
    {
        string? line = File.Exists($"/proc/{pid}/status") ? File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)) : null;
        return line is null ? "?" : $"{long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0:F0} MiB";
    }

    /// <summary>A node process of the bench: this program, run again as <c>attention node</c>.</summary>
    private sealed class Node : IDisposable
    {
        public static readonly ConcurrentBag<Node> All = [];

        private Node(Process process, string name)
        {
            Process = process;
            Name = name;
            process.OutputDataReceived += (_, e) => Keep(e.Data);
            process.ErrorDataReceived += (_, e) => Keep(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            All.Add(this);
        }

        public Process Process { get; }

        public string Name { get; }

        public ConcurrentQueue<string> Lines { get; } = new();

        public static Node Start(BrokerOptions broker, string name, string roles, int threads)
        {
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in new[] { typeof(ClusterBench).Assembly.Location, "node", "--broker", broker.Url, "--name", name, "--roles", roles, "--threads", threads.ToString(CultureInfo.InvariantCulture) })
            {
                start.ArgumentList.Add(arg);
            }

            start.Environment["ATTENTION_BROKER__PREFIX"] = broker.Prefix;
            return new Node(Process.Start(start) ?? throw new InvalidOperationException($"could not start {name}"), name);
        }

        /// <summary>The local time a node's log line was written (its HH:mm:ss.fff prefix).</summary>
        public static DateTime Stamp(string line)
            => line.Length >= 12 && TimeOnly.TryParseExact(line[..12], "HH:mm:ss.fff", CultureInfo.InvariantCulture, DateTimeStyles.None, out var time) ? DateTime.Today.Add(time.ToTimeSpan()) : default;

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill();
                Process.WaitForExit(5000);
            }

            Process.Dispose();
        }

        private void Keep(string? line)
        {
            if (line is not null)
            {
                Lines.Enqueue(line);
            }
        }
    }
}
