using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;

namespace AttentionActors.Cluster.Tests;

/// <summary>--audit: shards computed again on a second worker node must carry the same bits.</summary>
[Collection(BrokerCollection.Name)]
public sealed class AuditTests(PrivateBroker broker)
{
    private static AttentionProblem Job(int seed)
    {
        var (q, k, v) = TestData.Qkv(seed, 1, 4, 2, 700, 700, 32, 32);
        return AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, BlockSize = 64 });
    }

    [Fact]
    public async Task Full_audit_on_a_healthy_cluster_passes_with_single_node_bits()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        var problem = Job(51);

        var result = await cluster.Within(cluster.Client.ComputeAsync(problem, maxShardBytes: 64 << 10, audit: 1.0), TimeSpan.FromSeconds(60));

        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "audited output");
        await cluster.Eventually(() => cluster.Find("w1")?.Heartbeat.ShardsDone + cluster.Find("w2")?.Heartbeat.ShardsDone >= 2 * 8, TimeSpan.FromSeconds(10), "heartbeats showing both computations of the shards");
        long computed = cluster.Member("w1").Heartbeat.ShardsDone + cluster.Member("w2").Heartbeat.ShardsDone;
        Assert.True(computed >= 2 * 8, $"only {computed} shard computations for a fully audited job");
    }

    [Fact]
    public async Task A_worker_that_flips_a_bit_is_caught_and_the_job_fails_naming_both_nodes()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("honest", null), ("faulty", new Dictionary<string, string> { ["ATTENTION_NODE__FAULT"] = "flip-bit" }));

        var failure = await Assert.ThrowsAsync<AttentionJobException>(() => cluster.Within(cluster.Client.ComputeAsync(Job(52), maxShardBytes: 64 << 10, audit: 1.0), TimeSpan.FromSeconds(60)));

        Assert.Contains("audit failed", failure.Message, StringComparison.Ordinal);
        Assert.Contains("node://honest", failure.Message, StringComparison.Ordinal);
        Assert.Contains("node://faulty", failure.Message, StringComparison.Ordinal);
    }
}
