using System.Diagnostics;
using System.Text.Json;

namespace AttentionActors.Cluster.Tests;

/// <summary>The cluster commands as users run them: separate processes, real broker.</summary>
[Collection(BrokerCollection.Name)]
public sealed class ClusterCliTests(PrivateBroker broker)
{
    private static readonly Dictionary<string, string> NoEnvironment = [];

    [Fact]
    public async Task Node_gives_up_on_an_unreachable_broker_after_its_connect_timeout_with_exit_1()
    {
        var clock = Stopwatch.StartNew();
        await using var node = NodeProcess.Start("node", NoEnvironment, "node", "--broker", "amqp://someone:pw@127.0.0.1:9/", "--connect-timeout", "2");

        int code = await node.WaitForExit(TimeSpan.FromSeconds(30));

        Assert.True(code == 1, $"exit {code}:\n{node.Tail()}");
        Assert.Contains("cannot reach broker amqp://someone:***@127.0.0.1:9/ after 2 s", node.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("pw@", node.Output, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task Unknown_settings_and_missing_credentials_are_refused_by_name()
    {
        await using var typo = NodeProcess.Start("typo", new Dictionary<string, string> { ["ATTENTION_NODE__THREADZ"] = "4" }, "node", "--broker", broker.Url);
        Assert.Equal(2, await typo.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("unknown setting 'Node:THREADZ'", typo.Output, StringComparison.OrdinalIgnoreCase);

        await using var guest = NodeProcess.Start("guest", NoEnvironment, "node", "--broker", $"amqp://127.0.0.1:{broker.Port}/");
        Assert.Equal(1, await guest.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("names no user", guest.Output, StringComparison.Ordinal);

        await using var roles = NodeProcess.Start("roles", NoEnvironment, "node", "--broker", broker.Url, "--roles", "worker,janitor");
        Assert.Equal(2, await roles.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("roles 'worker,janitor'", roles.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_lists_live_nodes_as_a_table_and_as_json_and_a_stopped_node_exits_0()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        var worker = cluster.Start("status-worker", NodeRoles.Worker, threads: 2);
        cluster.Start("status-both", $"{NodeRoles.Coordinator},{NodeRoles.Reducer}");
        await cluster.WaitForNodes(TimeSpan.FromSeconds(30), "status-worker", "status-both");
        var environment = new Dictionary<string, string>
        {
            ["ATTENTION_BROKER__PREFIX"] = cluster.Broker.Prefix,
            ["ATTENTION_BROKER__HEARTBEATINTERVALSECONDS"] = "0.25",
        };

        await using var table = NodeProcess.Start("status", environment, "cluster", "status", "--broker", broker.Url);
        Assert.Equal(0, await table.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("2 live nodes", table.Output, StringComparison.Ordinal);
        Assert.Contains("status-worker", table.Output, StringComparison.Ordinal);
        Assert.DoesNotContain(broker.Password, table.Output, StringComparison.Ordinal);

        await using var json = NodeProcess.Start("status-json", environment, "cluster", "status", "--broker", broker.Url, "--json");
        Assert.Equal(0, await json.WaitForExit(TimeSpan.FromSeconds(30)));
        using var document = JsonDocument.Parse(json.Output);
        var nodes = document.RootElement.GetProperty("nodes").EnumerateArray().ToDictionary(n => n.GetProperty("name").GetString()!);
        Assert.Equal(2, nodes["status-worker"].GetProperty("threads").GetInt32());
        Assert.Equal(["coordinator", "reducer"], nodes["status-both"].GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
        Assert.True(nodes["status-worker"].GetProperty("lastHeartbeatSecondsAgo").GetDouble() < 2);

        worker.Terminate();
        Assert.Equal(0, await worker.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("node status-worker stopped", worker.Output, StringComparison.Ordinal);
    }

    /// <summary>A float32 .npy file of Gaussian values (scaled), written by hand: header, then the data.</summary>
    private static void SaveNpy(string path, Random rng, float scale, params int[] shape)
    {
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        int padded = ((10 + dict.Length + 1 + 63) / 64) * 64;
        string header = dict + new string(' ', padded - 10 - dict.Length - 1) + "\n";
        using var file = File.Create(path);
        file.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        file.Write(BitConverter.GetBytes((ushort)header.Length));
        file.Write(System.Text.Encoding.ASCII.GetBytes(header));
        for (int i = 0; i < shape.Aggregate(1, (a, b) => a * b); i++)
        {
            file.Write(BitConverter.GetBytes((float)(Kernels.Tests.TestData.Gaussian(rng) * scale)));
        }
    }

    [Fact]
    public async Task Inspect_on_a_cluster_computes_entropy_and_coverage_there_with_the_single_node_bits()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null), ("w2", null));
        string dir = Directory.CreateTempSubdirectory("attention-inspect-cluster-").FullName;
        try
        {
            string F(string name) => Path.Combine(dir, name);
            string[] job = ["inspect", "--random", "--seq", "300", "--dim", "16", "--heads", "4", "--kv-heads", "2", "--causal", "--block", "32", "--max-shard-bytes", "65536"];
            var environment = new Dictionary<string, string>
            {
                ["ATTENTION_BROKER__PREFIX"] = cluster.Broker.Prefix,
                ["ATTENTION_BROKER__HEARTBEATINTERVALSECONDS"] = "0.25",
                ["ATTENTION_BROKER__NODETIMEOUTSECONDS"] = "2",
            };
            string[] Outputs(string where) => ["--entropy-out", F($"e-{where}.npy"), "--coverage-out", F($"c-{where}.npy"), "--rows", "20:290", "--cols", "5:", "--weights-out", F($"w-{where}.npy"), "--heatmap", F($"h-{where}.svg"), "--size", "32"];
            await using var remote = NodeProcess.Start("inspect-cluster", environment, [.. job, "--broker", broker.Url, .. Outputs("cluster")]);
            await using var local = NodeProcess.Start("inspect-local", NoEnvironment, [.. job, "--single-node", .. Outputs("local")]);
            int remoteCode = await remote.WaitForExit(TimeSpan.FromSeconds(90));
            int localCode = await local.WaitForExit(TimeSpan.FromSeconds(90));

            Assert.True(remoteCode == 0, $"inspect --broker exited {remoteCode}:\n{remote.Tail()}\n{cluster.Logs()}");
            Assert.True(localCode == 0, $"inspect --single-node exited {localCode}:\n{local.Tail()}");
            Assert.Contains("the coverage and 2 weights passes (on the cluster on", remote.Output, StringComparison.Ordinal);

            // Four jobs ran on the cluster: the attention (with entropy), the coverage pass, and the weights passes of the window and the heatmap.
            Assert.Equal(4, System.Text.RegularExpressions.Regex.Count(cluster.Nodes.Single(n => n.Name == "coordinator").Output, "started:"));
            foreach (string output in new[] { "e-{0}.npy", "c-{0}.npy", "w-{0}.npy", "h-{0}.svg" })
            {
                var (a, b) = (File.ReadAllBytes(F(string.Format(System.Globalization.CultureInfo.InvariantCulture, output, "cluster"))), File.ReadAllBytes(F(string.Format(System.Globalization.CultureInfo.InvariantCulture, output, "local"))));
                int first = Enumerable.Range(0, Math.Min(a.Length, b.Length)).FirstOrDefault(i => a[i] != b[i], -1);
                Assert.True(a.Length == b.Length && first < 0, $"{output}: the cluster's file differs from single node ({a.Length} vs {b.Length} bytes, first differing byte {first})");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Mha_on_a_cluster_writes_the_single_node_bits()
    {
        await using var cluster = await ClusterHarness.StartAsync(broker);
        await cluster.StartTopology(("w1", null));
        string dir = Directory.CreateTempSubdirectory("attention-mha-cluster-").FullName;
        try
        {
            var rng = new Random(5);
            string F(string name) => Path.Combine(dir, name);
            SaveNpy(F("x.npy"), rng, 1f, 2, 70, 24);
            SaveNpy(F("m.npy"), rng, 1f, 2, 90, 12);
            SaveNpy(F("wq.npy"), rng, 0.3f, 32, 24);
            SaveNpy(F("wk.npy"), rng, 0.3f, 32, 12);
            SaveNpy(F("wv.npy"), rng, 0.3f, 32, 20);
            SaveNpy(F("mv.npy"), rng, 1f, 2, 90, 20);
            SaveNpy(F("bq.npy"), rng, 0.1f, 32);
            SaveNpy(F("bv.npy"), rng, 0.1f, 32);
            SaveNpy(F("wo.npy"), rng, 0.3f, 24, 32);
            SaveNpy(F("bo.npy"), rng, 0.1f, 24);
            string[] layer = ["mha", "--x", F("x.npy"), "--memory", F("m.npy"), "--wq", F("wq.npy"), "--wk", F("wk.npy"), "--wv", F("wv.npy"), "--wo", F("wo.npy"), "--bo", F("bo.npy"),
                "--memory-value", F("mv.npy"), "--bq", F("bq.npy"), "--bv", F("bv.npy"), "--heads", "4", "--key-lengths", "90,33", "--block", "32"];
            var environment = new Dictionary<string, string>
            {
                ["ATTENTION_BROKER__PREFIX"] = cluster.Broker.Prefix,
                ["ATTENTION_BROKER__HEARTBEATINTERVALSECONDS"] = "0.25",
                ["ATTENTION_BROKER__NODETIMEOUTSECONDS"] = "2",
            };
            await using var remote = NodeProcess.Start("mha-cluster", environment, [.. layer, "--broker", broker.Url, "--out", F("y-cluster.npy")]);
            await using var local = NodeProcess.Start("mha-local", NoEnvironment, [.. layer, "--single-node", "--out", F("y-local.npy")]);
            int remoteCode = await remote.WaitForExit(TimeSpan.FromSeconds(90));
            int localCode = await local.WaitForExit(TimeSpan.FromSeconds(90));

            Assert.True(remoteCode == 0, $"mha --broker exited {remoteCode}:\n{remote.Tail()}\n{cluster.Logs()}");
            Assert.True(localCode == 0, $"mha --single-node exited {localCode}:\n{local.Tail()}");
            Assert.Contains("mha: X [2, 70, 24] → out [2, 70, 24]", remote.Output, StringComparison.Ordinal);
            Assert.Contains("projections on the workers", remote.Output, StringComparison.Ordinal);
            Assert.Contains("started:", cluster.Nodes.Single(n => n.Name == "coordinator").Output, StringComparison.Ordinal);

            // Same header and the same bits: the files are byte for byte equal.
            var (a, b) = (File.ReadAllBytes(F("y-cluster.npy")), File.ReadAllBytes(F("y-local.npy")));
            int first = Enumerable.Range(0, Math.Min(a.Length, b.Length)).FirstOrDefault(i => a[i] != b[i], -1);
            Assert.True(a.Length == b.Length && first < 0, $"the cluster's output differs from single node ({a.Length} vs {b.Length} bytes, first differing byte {first})");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
