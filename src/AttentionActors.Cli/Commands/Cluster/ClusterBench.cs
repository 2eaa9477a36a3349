using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>
/// <c>attention bench --cluster</c>: a local cluster of processes (a coordinator+reducer seed and
/// single-thread worker processes) against the embedded pipeline with as many workers, on the same
/// job in alternating runs, every result compared bit for bit; plus the cluster's formation time,
/// the data plane's one-way speed for 8 MiB answers, and how soon a worker killed mid-shard has its
/// shard computed elsewhere.
/// </summary>
internal static class ClusterBench
{
    private const int ProbeBytes = 8 << 20;

    /// <summary>Most times the cluster is formed for the formation time's median (as many as <c>--repeat</c> asks, up to this).</summary>
    private const int MaxFormations = 5;

    public static async Task<int> RunAsync(TextWriter stdout, TextWriter stderr, int n, int d, int heads, int workers, int repeat, bool causal, long maxShardBytes, CancellationToken cancellationToken)
    {
        string directory = Directory.CreateTempSubdirectory("attention-bench-").FullName;
        try
        {
            CertificateAuthority.Create(directory);

            // Formation: the cluster started and stopped a few times (it varies), then started for the measurements.
            var formations = new List<double>();
            int formationCount = Math.Clamp(repeat, 1, MaxFormations);
            for (int i = 0; i < formationCount - 1; i++)
            {
                var (started, took) = await LocalCluster.StartAsync(directory, workers, 1, "127.0.0.1", null, FreePort(), FreePort(), cancellationToken);
                formations.Add(took.TotalSeconds);
                await LocalCluster.StopAsync(started, TimeSpan.FromSeconds(20));
            }

            var (state, formation) = await LocalCluster.StartAsync(directory, workers, 1, "127.0.0.1", null, FreePort(), FreePort(), cancellationToken);
            formations.Add(formation.TotalSeconds);
            try
            {
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} cores; cluster: a coordinator+reducer process and {workers} single-thread worker processes, formed in {PipelineBench.Median(formations):F2} s (launch to every node Up; median of {formations.Count}, slowest {formations.Max():F2} s)"));
                return await MeasureAsync(stdout, stderr, state, n, d, heads, workers, repeat, causal, maxShardBytes, cancellationToken);
            }
            finally
            {
                await LocalCluster.StopAsync(state, TimeSpan.FromSeconds(20));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<int> MeasureAsync(TextWriter stdout, TextWriter stderr, LocalClusterState state, int n, int d, int heads, int workers, int repeat, bool causal, long maxShardBytes, CancellationToken cancellationToken)
    {
        string dir = state.Directory;
        await using var op = OperatorClient.Connect(state.Data, Path.Combine(dir, CertificateAuthority.NodeFile), Path.Combine(dir, CertificateAuthority.CaFile));
        var members = (await op.StatusAsync(cancellationToken)).Members;
        string workerData = members.First(m => m.Roles.Contains("worker")).Card!.DataEndpoint;

        // The data plane: 8 MiB answers from a worker node to this process, one at a time.
        var probes = new List<double>();
        for (int i = 0; i < 23; i++)
        {
            var clock = Stopwatch.StartNew();
            await op.ProbeAsync(workerData, ProbeBytes, cancellationToken);
            if (i >= 3)
            {
                probes.Add(clock.Elapsed.TotalSeconds);
            }
        }

        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"data plane: {ProbeBytes / PipelineBench.Median(probes) / (1 << 30):F2} GiB/s one way for 8 MiB answers (TLS 1.3 handshake, AES-GCM records; median of {probes.Count})"));

        var problem = AttentionProblem.Create(PipelineBench.Random("Q", 1, heads, n, d), PipelineBench.Random("K", 2, heads, n, d), PipelineBench.Random("V", 3, heads, n, d), new AttentionOptions { Causal = causal });
        double flops = problem.Geometry.VisibleFlops();
        await using var embedded = EmbeddedPipeline.Start(new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = maxShardBytes } });
        await using var client = await ClusterClient.ConnectAsync(new ClusterClientOptions { Cluster = state.Data, Certificate = Path.Combine(dir, CertificateAuthority.ClientFile), CaCertificate = Path.Combine(dir, CertificateAuthority.CaFile), MaxShardBytes = maxShardBytes }, null, cancellationToken);
        var expected = await embedded.ComputeAsync(problem, null, null, cancellationToken);
        var shards = new ShardCount();

        // Bytes on the data plane, counted where they are read (the nodes' and the client's), against the dry run's model.
        var before = (await op.StatusAsync(cancellationToken)).Members.ToDictionary(m => m.Address, m => m.Card?.BytesIn ?? 0);
        long clientBefore = client.Traffic.Read;
        bool equal = PipelineBench.Same(expected, await client.ComputeAsync(problem, null, shards, cancellationToken));
        var after = (await op.StatusAsync(cancellationToken)).Members;
        long measured = client.Traffic.Read - clientBefore + after.Sum(m => (m.Card?.BytesIn ?? 0) - before.GetValueOrDefault(m.Address));
        var workerCards = after.Where(m => m.Roles.Contains("worker")).OrderBy(m => m.Address, StringComparer.Ordinal).ToList();
        int[] nodes = [.. workerCards.Select(m => m.Card?.Threads ?? 0)];
        var g = problem.Geometry;
        var plan = DryRun.ClusterPlan(g, nodes.Sum(), new PlanOptions { MaxShardBytes = maxShardBytes });
        long storeBytes = new AttentionActors.Cluster.Node.NodeOptions().BlockStoreBytes;
        long predicted = DryRun.BytesMoved(g, plan, nodes, storeBytes);
        long data = DryRun.DataBytes(g);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bytes moved: {measured:N0} measured on the data plane, {predicted:N0} by the dry run ({(measured - predicted) / (double)predicted:+0.0%;-0.0%}); {measured / (double)data:F2}× the {data:N0} bytes of Q, K, V, output and lse"));
        var nodeIn = DryRun.NodeBytesIn(g, plan, nodes, storeBytes);
        stdout.WriteLine("  fetched by each worker node, measured / dry run: " + string.Join(", ", workerCards.Select((m, i) => string.Create(CultureInfo.InvariantCulture, $"{((m.Card?.BytesIn ?? 0) - before.GetValueOrDefault(m.Address)) / 1e6:F0} / {nodeIn[i] / 1e6:F0} MB"))));
        var embeddedTimes = new List<double>();
        var clusterTimes = new List<double>();
        for (int r = 0; r < repeat; r++)
        {
            var clock = Stopwatch.StartNew();
            equal &= PipelineBench.Same(expected, await embedded.ComputeAsync(problem, null, null, cancellationToken));
            embeddedTimes.Add(clock.Elapsed.TotalSeconds);
            clock.Restart();
            equal &= PipelineBench.Same(expected, await client.ComputeAsync(problem, null, null, cancellationToken));
            clusterTimes.Add(clock.Elapsed.TotalSeconds);
        }

        double e = flops / PipelineBench.Median(embeddedTimes) / 1e9;
        double c = flops / PipelineBench.Median(clusterTimes) / 1e9;
        stdout.WriteLine();
        stdout.WriteLine("| N | d | H | mask | cluster shards | embedded GFLOP/s (median) | cluster GFLOP/s (median) | cluster/embedded | bits equal |");
        stdout.WriteLine("|---:|---:|---:|---|---:|---:|---:|---:|---|");
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {n} | {d} | {heads} | {(causal ? "causal" : "dense")} | {shards.Total} | {e:F1} | {c:F1} | {c / e:F3} | {(equal ? "yes" : "NO")} |"));
        stdout.WriteLine();

        // A worker killed while it computes a shard: when its attempt is re-issued, and the job's bits after.
        var killedJob = client.ComputeAsync(problem, null, null, cancellationToken);
        int victim = state.Pids[1];
        string victimAddress = "";
        DateTime? killedAt = null;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (killedAt is null && !killedJob.IsCompleted && DateTime.UtcNow < deadline)
        {
            var busy = (await op.StatusAsync(cancellationToken)).Members.FirstOrDefault(m => m.Card is { InFlight: > 0 } card && card.ProcessId == victim);
            if (busy is not null)
            {
                Signal.Send(victim, Signal.Kill);
                killedAt = DateTime.Now;
                victimAddress = busy.Address;
            }
            else
            {
                await Task.Delay(10, cancellationToken);
            }
        }

        var afterKill = await killedJob;
        equal &= PipelineBench.Same(expected, afterKill);
        if (killedAt is { } at)
        {
            double shardSeconds = PipelineBench.Median(clusterTimes) * workers / Math.Max(1, shards.Total);
            string? reissue = File.ReadLines(Path.Combine(dir, "logs", "seed.log")).FirstOrDefault(l => l.Contains(victimAddress, StringComparison.Ordinal) && l.Contains("re-issuing as attempt 2", StringComparison.Ordinal));
            if (reissue is not null && TimeSpan.TryParseExact(reissue[..12], @"hh\:mm\:ss\.fff", CultureInfo.InvariantCulture, out var when))
            {
                double detect = (when - at.TimeOfDay).TotalSeconds;
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"worker killed mid-shard (SIGKILL): its shard re-issued {detect:F2} s later; one shard computes in about {shardSeconds:F2} s on one thread, so it was computed again within {detect + shardSeconds:F2} s; bits after: {(PipelineBench.Same(expected, afterKill) ? "equal" : "DIFFERENT")}"));
            }
            else
            {
                stdout.WriteLine("worker killed mid-shard (SIGKILL): no re-issue was logged (its shard may have been answered before it died); bits after: " + (PipelineBench.Same(expected, afterKill) ? "equal" : "DIFFERENT"));
            }
        }
        else
        {
            stdout.WriteLine("worker kill: skipped (the job ended before the worker held a shard)");
        }

        if (!equal)
        {
            stderr.WriteLine("bench: a cluster result differed from the embedded pipeline's");
            return 1;
        }

        return 0;
    }

    /// <summary>A free TCP port on loopback (the system's choice, released for a node to take).</summary>
    internal static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>Keeps the shard count a job reports with its progress.</summary>
    private sealed class ShardCount : IProgress<JobProgress>
    {
        public int Total { get; private set; }

        public void Report(JobProgress value) => Total = value.ShardsTotal;
    }
}
