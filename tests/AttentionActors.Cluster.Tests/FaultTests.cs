using System.Diagnostics;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Cluster.Tests;

/// <summary>Nodes killed, frozen and poisoned mid-job: the job still gives single-node bits, or fails clearly and in bounded time.</summary>
[Collection(BrokerCollection.Name)]
public sealed class FaultTests(PrivateBroker broker)
{
    private const long SmallShards = 1 << 20;

    /// <summary>About 17 GFLOP in a few hundred shards: a second or two on the test machine.</summary>
    private static AttentionProblem LongJob(int seed = 21, int heads = 4)
    {
        var (q, k, v) = TestData.Qkv(seed, 1, heads, heads, 4096, 4096, 64, 64);
        return AttentionProblem.Create(q, k, v);
    }

    /// <summary>Runs <paramref name="problem"/> and calls <paramref name="onFirstProgress"/> once the first shard is merged.</summary>
    private static async Task<AttentionResult> RunWithHook(ClusterHarness cluster, AttentionProblem problem, Action onFirstProgress)
    {
        int fired = 0;
        var progress = new SyncProgress(p =>
        {
            if (p.ShardsDone > 0 && Interlocked.Exchange(ref fired, 1) == 0)
            {
                onFirstProgress();
            }
        });
        return await cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards, progress: progress).WaitAsync(TimeSpan.FromSeconds(120));
    }

    [Fact]
    public async Task Worker_killed_mid_job_leaves_the_bits_unchanged_and_the_broker_redelivers_its_shard()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);

        // The coordinator's own deadline is far off: only the broker's redelivery of the unacknowledged shard can finish the job in time.
        // 16 heads, so the job outlasts the moment w1 is seen holding a shard even with the faster kernel (8 finished first once).
        cluster.Start("coordinator", NodeRoles.Coordinator, environment: new Dictionary<string, string> { ["ATTENTION_JOB__SHARDTIMEOUTSECONDS"] = "300" });
        cluster.Start("reducer", NodeRoles.Reducer);
        var victim = cluster.Start("w1", NodeRoles.Worker);
        cluster.Start("w2", NodeRoles.Worker);
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "coordinator", "reducer", "w1", "w2");
        var problem = LongJob(heads: 16);

        var job = cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards);
        await WhileBusy(cluster, victim, job, v => v.KillHard());
        var actual = await cluster.Within(job, TimeSpan.FromSeconds(100));

        Assert.True(victim.HasExited, "the worker was not killed during the job");
        var expected = ClusterHarness.SingleNode(problem);
        TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, "output after a worker was killed");
        TestData.AssertBitwise(expected.Lse, actual.Lse, "lse after a worker was killed");
    }

    [Fact]
    public async Task Frozen_worker_shard_is_reissued_after_its_deadline_and_its_late_result_is_dropped()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        cluster.Start("coordinator", NodeRoles.Coordinator, environment: new Dictionary<string, string>
        {
            ["ATTENTION_JOB__SHARDTIMEOUTSECONDS"] = "1",
            ["ATTENTION_JOB__MINWORKERFLOPS"] = "1e12",
        });
        cluster.Start("reducer", NodeRoles.Reducer);
        var frozen = cluster.Start("w1", NodeRoles.Worker);
        cluster.Start("w2", NodeRoles.Worker);
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "coordinator", "reducer", "w1", "w2");
        var problem = LongJob(22);

        var clock = Stopwatch.StartNew();
        var actual = await RunWithHook(cluster, problem, frozen.Freeze);
        var expected = ClusterHarness.SingleNode(problem);
        TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, "output with a frozen worker");

        // Woken, the worker answers its stale shard (dropped by the reducer) and goes on serving.
        frozen.Thaw();
        var again = await cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards).WaitAsync(TimeSpan.FromSeconds(120));
        TestData.AssertBitwise(expected.Output.Data.Span, again.Output.Data.Span, "output of the next job");
        Assert.False(frozen.HasExited, $"the frozen worker died:\n{frozen.Tail()}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(110), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task Reducer_killed_mid_job_fails_the_client_within_the_node_timeout_and_grace()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        var reducer = cluster.Nodes.Single(n => n.Name == "reducer");
        var clock = new Stopwatch();

        // 16 heads: the job must outlast the kill, which lands a broker round trip after the first merge;
        // with 4 heads a fast machine finished every shard in that time (a fresh-clone CI run saw it).
        var failure = await Assert.ThrowsAsync<AttentionJobException>(() => RunWithHook(cluster, LongJob(23, heads: 16), () =>
        {
            reducer.KillHard();
            clock.Start();
        }));

        // Node timeout 2 s (heartbeats every 0.25 s) + result grace 2 s, with room for a loaded machine.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the client learnt of the reducer's death after {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Contains("reducer", failure.Message, StringComparison.Ordinal);

        // A new reducer takes the next job.
        cluster.Start("reducer-2", NodeRoles.Reducer);
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "reducer-2");
        await cluster.Eventually(() => cluster.Find("reducer") is null, TimeSpan.FromSeconds(30), "the dead reducer dropped from the client's membership");
        var problem = LongJob(24);
        var result = await cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards).WaitAsync(TimeSpan.FromSeconds(120));
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "the job after the reducer died");
    }

    [Fact]
    public async Task Coordinator_killed_mid_job_fails_the_run_without_an_output_file_and_the_next_job_works()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        var coordinator = cluster.Nodes.Single(n => n.Name == "coordinator");
        string output = Path.Combine(Path.GetTempPath(), $"attention-{Guid.NewGuid():N}.npy");
        var environment = new Dictionary<string, string>
        {
            ["ATTENTION_BROKER__PREFIX"] = cluster.Broker.Prefix,
            ["ATTENTION_BROKER__HEARTBEATINTERVALSECONDS"] = "0.25",
            ["ATTENTION_BROKER__NODETIMEOUTSECONDS"] = "2",
        };
        await using var run = NodeProcess.Start("run", environment, "run", "--random", "--seq", "8192", "--dim", "64", "--heads", "4", "--max-shard-bytes", "131072", "--broker", cluster.Broker.Url, "--out", output);

        await coordinator.WaitForOutput("started:", TimeSpan.FromSeconds(60));
        coordinator.KillHard();
        var clock = Stopwatch.StartNew();
        int code = await run.WaitForExit(TimeSpan.FromSeconds(30));

        Assert.True(code == 1, $"run exited {code}:\n{run.Tail()}");
        Assert.Contains("coordinator", run.Output, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"the run took {clock.Elapsed.TotalSeconds:F1} s to fail");
        Assert.False(File.Exists(output), "a failed run left an output file");

        cluster.Start("coordinator-2", NodeRoles.Coordinator);
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "coordinator-2");
        await cluster.Eventually(() => cluster.Find("coordinator") is null, TimeSpan.FromSeconds(30), "the dead coordinator dropped from the client's membership");
        var problem = LongJob(25);
        var result = await cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards).WaitAsync(TimeSpan.FromSeconds(120));
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "the job after the coordinator died");
    }

    [Fact]
    public async Task Shard_that_kills_every_worker_is_dead_lettered_and_fails_only_its_job()
    {
        const float Poison = 1234.5f;
        await using var cluster = await ClusterHarness.StartAsync(broker, b => b with { DeliveryLimit = 2 });
        cluster.Start("coordinator", NodeRoles.Coordinator, environment: new Dictionary<string, string> { ["ATTENTION_JOB__SHARDTIMEOUTSECONDS"] = "120" });
        cluster.Start("reducer", NodeRoles.Reducer);
        var faulty = new Dictionary<string, string> { ["ATTENTION_NODE__FAULT"] = $"exit-on-value={Poison}" };
        int started = 0;
        NodeProcess StartWorker() => cluster.Start($"w{Interlocked.Increment(ref started)}", NodeRoles.Worker, environment: faulty);
        StartWorker();
        StartWorker();
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "coordinator", "reducer", "w1", "w2");

        // Keeps two workers alive while the poisoned shard kills them one by one.
        using var stop = new CancellationTokenSource();
        var keeper = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                int alive = cluster.Nodes.Count(n => n.Name.StartsWith('w') && !n.HasExited);
                for (int i = alive; i < 2 && started < 12; i++)
                {
                    StartWorker();
                }

                await Task.Delay(200);
            }
        });

        var (q, k, v) = TestData.Qkv(26, 1, 2, 2, 512, 512, 32, 32);
        q.Data.Span[(1 * 512 * 32) + (300 * 32) + 5] = Poison;
        var poisoned = AttentionProblem.Create(q, k, v);
        var healthy = LongJob(27);
        var poisonedJob = cluster.Client.ComputeAsync(poisoned, maxShardBytes: 64 << 10);
        var healthyJob = cluster.Client.ComputeAsync(healthy, maxShardBytes: SmallShards);

        var failure = await Assert.ThrowsAsync<AttentionJobException>(() => cluster.Within(poisonedJob, TimeSpan.FromSeconds(90)));
        Assert.Contains("dead-lettered", failure.Message, StringComparison.Ordinal);
        Assert.Contains("head 1", failure.Message, StringComparison.Ordinal);
        var result = await healthyJob.WaitAsync(TimeSpan.FromSeconds(120));
        await stop.CancelAsync();
        await keeper;
        TestData.AssertBitwise(ClusterHarness.SingleNode(healthy).Output.Data.Span, result.Output.Data.Span, "the healthy job beside the poisoned one");
        Assert.True(started >= 3, $"the poisoned shard killed {started - 2} workers; the delivery limit needs 3");
    }

    [Fact]
    public async Task Broker_restarted_mid_job_gives_the_right_bits_or_a_clear_failure_and_the_nodes_recover()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        var problem = LongJob(28, heads: 8);
        var expected = ClusterHarness.SingleNode(problem);
        Task? restart = null;

        try
        {
            var result = await cluster.Within(RunWithHook(cluster, problem, () => restart = broker.RestartAppAsync(TimeSpan.FromSeconds(1))), TimeSpan.FromSeconds(90));
            TestData.AssertBitwise(expected.Output.Data.Span, result.Output.Data.Span, "output across a broker restart");
        }
        catch (AttentionJobException failure)
        {
            Assert.Contains("broker", failure.Message, StringComparison.Ordinal);
        }

        Assert.NotNull(restart);
        await restart;
        var back = DateTimeOffset.UtcNow;

        // Every node reconnects on its own (each is heard again after the restart), and the next job is exact.
        string[] nodes = ["coordinator", "reducer", "w1", "w2"];
        await cluster.Eventually(() => nodes.All(n => cluster.Find(n)?.SeenAt > back), TimeSpan.FromSeconds(60), "every node heard from after the broker came back");
        var again = await cluster.Within(cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards), TimeSpan.FromSeconds(90));
        TestData.AssertBitwise(expected.Output.Data.Span, again.Output.Data.Span, "the job after the broker came back");
        Assert.All(cluster.Nodes, n => Assert.False(n.HasExited, $"{n.Name} died:\n{n.Tail()}"));
    }

    [Fact]
    public async Task Worker_stopped_with_SIGTERM_mid_shard_answers_it_and_exits_0()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        var leaving = cluster.Nodes.Single(n => n.Name == "w1");
        var problem = LongJob(29, heads: 8);

        var job = cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards);
        await WhileBusy(cluster, leaving, job, v => v.Terminate());
        int code = await leaving.WaitForExit(TimeSpan.FromSeconds(40));
        var result = await cluster.Within(job, TimeSpan.FromSeconds(100));

        Assert.True(code == 0, $"w1 exited {code}:\n{leaving.Tail()}");
        Assert.Contains("node w1 stopped", leaving.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("before its running shards were answered", leaving.Output, StringComparison.Ordinal);
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "output after a worker left");
    }

    [Fact]
    public async Task A_client_that_vanishes_mid_job_has_its_job_cancelled_by_the_coordinator()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null));
        var coordinator = cluster.Nodes.Single(n => n.Name == "coordinator");
        var environment = new Dictionary<string, string>
        {
            ["ATTENTION_BROKER__PREFIX"] = cluster.Broker.Prefix,
            ["ATTENTION_BROKER__HEARTBEATINTERVALSECONDS"] = "0.25",
            ["ATTENTION_BROKER__NODETIMEOUTSECONDS"] = "2",
        };
        await using var run = NodeProcess.Start("run", environment, "run", "--random", "--seq", "8192", "--dim", "64", "--heads", "8", "--max-shard-bytes", "1048576", "--broker", cluster.Broker.Url);
        await coordinator.WaitForOutput("started:", TimeSpan.FromSeconds(60));

        run.KillHard();

        await coordinator.WaitForOutput("vanished", TimeSpan.FromSeconds(15));
        Assert.Contains("cancelled: the client node://client-", coordinator.Output, StringComparison.Ordinal);

        // The job's shards leave the work queue dropped, not computed: it empties while the worker has done fewer shards than the job had.
        int shards = int.Parse(System.Text.RegularExpressions.Regex.Match(coordinator.Output, @"started: (\d+) shards").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        await cluster.Eventually(() => broker.WorkQueueDepth(cluster.Broker.Prefix) == 0 && cluster.Find("w1")?.Heartbeat.InFlight == 0, TimeSpan.FromSeconds(30), "the work queue emptied and the worker idle");
        Assert.True(cluster.Member("w1").Heartbeat.ShardsDone < shards, $"the worker computed {cluster.Member("w1").Heartbeat.ShardsDone} shards of the cancelled job's {shards}");
    }

    /// <summary>Does <paramref name="act"/> to <paramref name="victim"/> (kill, stop) once its heartbeat says it is computing a shard.</summary>
    private static async Task WhileBusy(ClusterHarness cluster, NodeProcess victim, Task job, Action<NodeProcess> act)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!job.IsCompleted && DateTime.UtcNow < deadline)
        {
            if (cluster.Find(victim.Name) is { Heartbeat.InFlight: > 0 })
            {
                act(victim);
                return;
            }

            await Task.Delay(10);
        }

        Assert.Fail($"{victim.Name} never held a shard while the job ran:\n{cluster.Logs()}");
    }

    /// <summary>Reports on the caller's thread (no synchronization context hop), so a hook runs at once.</summary>
    private sealed class SyncProgress(Action<JobProgress> report) : IProgress<JobProgress>
    {
        public void Report(JobProgress value) => report(value);
    }
}
