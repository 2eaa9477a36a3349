using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;

namespace AttentionActors.Cluster.Tests;

/// <summary>Jobs and their coverage and weights passes on real node processes (1 coordinator, 1 reducer, 3 workers) over the private broker.</summary>
[Collection(BrokerCollection.Name)]
public sealed class MultiProcessTests(PrivateBroker broker)
{
    private const long SmallShards = 96 << 10;

    private static readonly string[] Cases = ["causal", "gqa", "cross", "padded", "entropy", "mask"];

    private static AttentionProblem Problem(string name) => name switch
    {
        "causal" => Create(TestData.Qkv(11, 1, 3, 3, 515, 515, 32, 32), new AttentionOptions { Causal = true, BlockSize = 64 }),
        "gqa" => Create(TestData.Qkv(12, 1, 6, 2, 300, 300, 24, 40), new AttentionOptions { BlockSize = 32 }),
        "cross" => Create(TestData.Qkv(13, 1, 2, 2, 123, 777, 32, 16), new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 48 }),
        "padded" => Create(TestData.Qkv(14, 3, 2, 2, 200, 200, 16, 16), new AttentionOptions { KeyLengths = [200, 37, 0], BlockSize = 16 }),
        "entropy" => Create(TestData.Qkv(15, 2, 4, 2, 260, 300, 16, 16), new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, KeyLengths = [300, 120], BlockSize = 32, Entropy = true }),
        "mask" => AttentionProblem.Create(Masked.Q, Masked.K, Masked.V, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32, Entropy = true }, MaskOf(2, 4, 200, 330)),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static (AttentionTensor Q, AttentionTensor K, AttentionTensor V) Masked => TestData.Qkv(16, 2, 4, 2, 200, 330, 16, 16);

    /// <summary>A per-batch, per-head additive mask: 70% of keys allowed with values in [−1, 1], row 9 of every plane fully masked.</summary>
    private static AttentionMask MaskOf(int b, int h, int nq, int nk)
    {
        var rng = new Random(17);
        var values = new float[b * h * nq * nk];
        for (int at = 0; at < values.Length; at++)
        {
            values[at] = at / nk % nq != 9 && rng.NextDouble() < 0.7 ? (float)((rng.NextDouble() * 2) - 1) : float.NegativeInfinity;
        }

        return AttentionMask.Additive(values, b, h, nq, nk);
    }

    private static AttentionProblem Create((AttentionTensor Q, AttentionTensor K, AttentionTensor V) t, AttentionOptions options)
        => AttentionProblem.Create(t.Q, t.K, t.V, options);

    [Fact]
    public async Task Cluster_of_processes_with_mixed_SIMD_widths_gives_single_node_bits()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(
            ("worker-512", null),
            ("worker-256", new Dictionary<string, string> { ["DOTNET_PreferredVectorBitWidth"] = "256" }),
            ("worker-noavx512", new Dictionary<string, string> { ["DOTNET_EnableAVX512"] = "0" }));

        foreach (string name in Cases)
        {
            var problem = Problem(name);
            var expected = ClusterHarness.SingleNode(problem);
            var actual = await cluster.Client.ComputeAsync(problem, maxShardBytes: SmallShards).WaitAsync(TimeSpan.FromSeconds(60));
            TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"{name}: cluster output");
            TestData.AssertBitwise(expected.Lse, actual.Lse, $"{name}: cluster lse");
            Assert.Equal(expected.Entropy is null, actual.Entropy is null);
            if (expected.Entropy is not null)
            {
                TestData.AssertBitwise(expected.Entropy, actual.Entropy, $"{name}: cluster entropy");
            }

            // The coverage pass, on the same workers: its subtrees cross the wire and fold on the reducer.
            var coverage = await cluster.Client.CoverageAsync(problem, actual.Lse, maxShardBytes: SmallShards / 4).WaitAsync(TimeSpan.FromSeconds(60));
            TestData.AssertBitwise(Inspection.Coverage(problem, expected.Lse), coverage, $"{name}: cluster coverage");

            // A weights pass over the mean of all heads, max-pooled: whole cells cross the wire from every worker.
            var window = new WeightsWindow(problem.Batch - 1, null, 3, problem.QuerySeq, 0, problem.KeySeq - 2, 37, 41, WeightPooling.Max);
            var cells = await cluster.Client.WeightsAsync(problem, actual.Lse, window, maxShardBytes: SmallShards).WaitAsync(TimeSpan.FromSeconds(60));
            var single = Inspection.Weights(problem, expected.Lse, window.Batch, null, (window.RowLo, window.RowHi), (window.ColLo, window.ColHi), window.CellRows, window.CellCols, window.Pooling);
            TestData.AssertBitwise(single, cells, $"{name}: cluster weights");
        }

        // Every worker took part, whatever its vector width: the bits above came from all three.
        string[] workers = ["worker-512", "worker-256", "worker-noavx512"];
        await cluster.Eventually(() => workers.All(w => cluster.Find(w)?.Heartbeat.ShardsDone > 0), TimeSpan.FromSeconds(10), "a heartbeat of each worker showing shards done");
        Assert.Equal("Vector256", cluster.Member("worker-256").Heartbeat.Simd);
        Assert.Equal("Vector256", cluster.Member("worker-noavx512").Heartbeat.Simd);
        foreach (var worker in workers)
        {
            Assert.True(cluster.Member(worker).Heartbeat.ShardsDone > 0, $"{worker} computed no shard:\n{cluster.Logs()}");
        }
    }
}
