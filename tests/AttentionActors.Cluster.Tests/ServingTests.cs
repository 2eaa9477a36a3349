using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Transport;
using AttentionActors.Cluster.Wire;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using Google.Protobuf;
using RabbitMQ.Client;
using P = AttentionActors.Cluster.Wire.Proto;

namespace AttentionActors.Cluster.Tests;

/// <summary>Nodes keep serving: through garbage on every queue, concurrent clients, and workers that join mid-job.</summary>
[Collection(BrokerCollection.Name)]
public sealed class ServingTests(PrivateBroker broker)
{
    private const long SmallShards = 512 << 10;

    private static AttentionProblem Job(int seed, int n = 2048, int heads = 4)
    {
        var (q, k, v) = TestData.Qkv(seed, 1, heads, heads, n, n, 64, 64);
        return AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true });
    }

    [Fact]
    public async Task Garbage_truncated_oversized_and_wrong_version_messages_on_every_queue_leave_the_nodes_serving()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null));
        var t = new Topology(cluster.Broker.Prefix, cluster.Broker.DeliveryLimit);
        var valid = WireCodec.Encode(new Pipeline.Coordinator.ShardMerged(new JobId("nobody"), 1), new ActorAddress("coordinator", "jobs"), null);
        var wrongVersion = P.Envelope.Parser.ParseFrom(valid);
        wrongVersion.Version = 7;
        byte[][] bodies =
        [
            [0xde, 0xad, 0xbe, 0xef],
            valid[..^3],
            wrongVersion.ToByteArray(),
            new byte[cluster.Broker.MaxMessageBytes + 1],

            // Over twice the budget: a client whose inbound limit were this low would close its connection and loop on redelivery.
            new byte[20 << 20],
        ];

        var factory = new ConnectionFactory { Uri = new Uri(broker.Url), MaxInboundMessageBodySize = 64 << 20 };
        await using (var connection = await factory.CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            foreach (var body in bodies)
            {
                await channel.BasicPublishAsync("", t.WorkQueue, body);
                await channel.BasicPublishAsync("", t.DeadQueue, body);
                await channel.BasicPublishAsync(t.Heartbeats, "", body);
                await channel.BasicPublishAsync(t.Broadcast, "", body);
                foreach (var node in new[] { "coordinator", "reducer", "w1" })
                {
                    await channel.BasicPublishAsync("", t.Inbox(node), body);
                }
            }
        }

        // The garbage has reached the nodes (they log each drop) before the job runs beside it.
        await cluster.Nodes.Single(n => n.Name == "reducer").WaitForOutput("dropped a message", TimeSpan.FromSeconds(30));
        await cluster.Nodes.Single(n => n.Name == "w1").WaitForOutput("not a valid shard", TimeSpan.FromSeconds(30));
        var problem = Job(31);
        var result = await cluster.Within(cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards), TimeSpan.FromSeconds(60));

        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "the job after the garbage");
        foreach (var node in cluster.Nodes)
        {
            Assert.False(node.HasExited, $"{node.Name} died:\n{node.Tail()}");
        }

        Assert.Contains("dropped a message", cluster.Nodes.Single(n => n.Name == "reducer").Output, StringComparison.Ordinal);
        Assert.Contains("not a valid shard", cluster.Nodes.Single(n => n.Name == "w1").Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Two_clients_at_once_both_get_their_own_bits_and_a_worker_joining_mid_job_takes_shards()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null));
        await using var second = await ClusterClient.ConnectAsync(cluster.Broker);
        await second.WaitForRoleAsync(NodeRoles.Coordinator, TimeSpan.FromSeconds(10));
        // The first job must outlast a worker process's start-up (about 4 s on a loaded 2-core machine), or w2 arrives after the work.
        var (a, b) = (Job(32, 8192), Job(33, 3000, 3));
        int joined = 0;
        var progress = new Progress<Pipeline.Client.JobProgress>(p =>
        {
            if (p.ShardsDone > 0 && Interlocked.Exchange(ref joined, 1) == 0)
            {
                cluster.Start("w2", NodeRoles.Worker);
            }
        });

        var first = cluster.Client.ComputeAsync(a, maxShardBytes: SmallShards, progress: progress);
        var other = second.ComputeAsync(b, maxShardBytes: SmallShards);
        var resultA = await cluster.Within(first, TimeSpan.FromSeconds(120));
        var resultB = await cluster.Within(other, TimeSpan.FromSeconds(120));

        TestData.AssertBitwise(ClusterHarness.SingleNode(a).Output.Data.Span, resultA.Output.Data.Span, "first client");
        TestData.AssertBitwise(ClusterHarness.SingleNode(b).Output.Data.Span, resultB.Output.Data.Span, "second client");
        await cluster.Eventually(() => cluster.Find("w2")?.Heartbeat.ShardsDone > 0, TimeSpan.FromSeconds(10), "a heartbeat of w2 showing shards done");
        Assert.True(cluster.Member("w2").Heartbeat.ShardsDone > 0, $"the worker that joined mid-job took no shard:\n{cluster.Logs()}");
    }

    [Fact]
    public async Task A_coordinator_gives_a_missing_reducer_one_node_timeout_to_join_then_refuses_naming_the_role()
    {
        // The client waits its node timeout (2 s) for a reducer and submits anyway; the coordinator waits 10 s.
        await using var cluster = await ClusterHarness.StartAsync(broker);
        var coordinator = cluster.Start("coordinator", NodeRoles.Coordinator, environment: new Dictionary<string, string> { ["ATTENTION_BROKER__NODETIMEOUTSECONDS"] = "10" });
        cluster.Start("w1", NodeRoles.Worker);
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "coordinator", "w1");
        var problem = Job(34, 700);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var refused = await Assert.ThrowsAsync<AttentionJobException>(() => cluster.Within(cluster.Client.ComputeAsync(problem), TimeSpan.FromSeconds(60)));
        Assert.Contains("no reducer node is alive", refused.Message, StringComparison.Ordinal);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(10), $"refused after {clock.Elapsed.TotalSeconds:F1} s, before the coordinator's 10 s node timeout: {refused.Message}");

        // A reducer that starts only after the job reached the coordinator still gets it.
        var job = cluster.Client.ComputeAsync(problem);
        await Task.WhenAny(job, cluster.Eventually(() => coordinator.Output.Split("submitted:").Length > 2, TimeSpan.FromSeconds(30), "the second job submitted"));
        cluster.Start("reducer", NodeRoles.Reducer);
        var result = await cluster.Within(job, TimeSpan.FromSeconds(60));
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "the job that waited for its reducer");
    }

    [Fact]
    public async Task A_coordinator_heard_from_but_without_an_inbox_fails_the_job_by_name_instead_of_losing_it()
    {
        // A node whose heartbeats arrive while its inbox is missing (its consuming connection is down):
        // what is sent to it is returned by the broker, and the client says so rather than wait forever.
        await using var cluster = await ClusterHarness.StartAsync(broker);
        var t = new Topology(cluster.Broker.Prefix, cluster.Broker.DeliveryLimit);
        var factory = new ConnectionFactory { Uri = new Uri(broker.Url) };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        using var stop = new CancellationTokenSource();
        var ghost = Task.Run(async () =>
        {
            long started = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            while (!stop.IsCancellationRequested)
            {
                var beat = new NodeHeartbeat("ghost", [NodeRoles.Coordinator, NodeRoles.Reducer, NodeRoles.Worker], "nowhere", 1, "Vector512", 1, started, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0, 0, false);
                await channel.BasicPublishAsync(t.Heartbeats, "", WireCodec.Encode(beat, new ActorAddress(NodeTransport.AnyNode, "membership"), null));
                await Task.Delay(200);
            }
        });
        await cluster.Eventually(() => cluster.Find("ghost") is not null, TimeSpan.FromSeconds(10), "the ghost's heartbeat at the client");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var failure = await Assert.ThrowsAsync<AttentionJobException>(() => cluster.Within(cluster.Client.ComputeAsync(Job(35, 300)), TimeSpan.FromSeconds(30)));
        await stop.CancelAsync();
        await ghost;

        Assert.Contains("node ghost has no inbox", failure.Message, StringComparison.Ordinal);
        Assert.Contains("SubmitAttention", failure.Message, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the failure took {clock.Elapsed.TotalSeconds:F1} s; the node timeout is {cluster.Broker.NodeTimeout.TotalSeconds} s");
    }
}
