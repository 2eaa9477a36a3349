using AttentionActors.Cli.Commands;
using AttentionActors.Cli.Commands.Cluster;

namespace AttentionActors.Cli.Tests;

public sealed class ClusterSettingsTests
{
    private static string Root()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "AttentionActors.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("the repository root was not found");
        }

        return root;
    }

    [Fact]
    public void Every_setting_is_documented_with_its_unit_and_default_and_nothing_else_is()
    {
        var rows = File.ReadAllLines(Path.Combine(Root(), "cluster-config", "README.md"))
            .Where(line => line.StartsWith("| `", StringComparison.Ordinal))
            .Select(line => line.Split('|', StringSplitOptions.TrimEntries))
            .ToDictionary(cells => cells[1].Trim('`'), cells => (Unit: cells[2], Default: cells[3]));

        Assert.Equal(ClusterSettings.Keys.Select(k => k.Key).Order(), rows.Keys.Order());
        foreach (var (key, unit, @default, _) in ClusterSettings.Keys)
        {
            Assert.Equal((unit, @default), rows[key]);
        }
    }

    [Fact]
    public void The_example_settings_file_holds_only_real_keys_with_valid_values()
    {
        var config = ClusterSettings.Load(Path.Combine(Root(), "cluster-config", "node.json"), [], new Dictionary<string, string?>());
        var node = ClusterSettings.Node(config);
        Assert.Equal(["worker"], node.Roles);
        Assert.Equal(["seed.example:4550"], node.Seeds);
        Assert.Equal(8, node.Threads);
        Assert.Equal("/etc/attention/node.pfx", node.Certificate);
    }

    [Fact]
    public void File_then_environment_then_flags_win_and_an_unknown_key_or_a_bad_value_is_named()
    {
        string file = Path.Combine(Path.GetTempPath(), $"node-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """{ "Node": { "Threads": 3, "Roles": "worker", "Seeds": "a:1" }, "Job": { "MaxAttempts": 7 }, "Tls": { "Ca": "/from/file.pem" } }""");
        try
        {
            var environment = new Dictionary<string, string?> { ["ATTENTION_NODE__THREADS"] = "5", ["ATTENTION_NODE__SEEDS"] = "b:2,c:3", ["UNRELATED"] = "x", ["ATTENTION_HOME"] = "/not/a/setting" };
            var node = ClusterSettings.Node(ClusterSettings.Load(file, [new("Node:Threads", "6"), new("Node:Roles", null)], environment));
            Assert.Equal(6, node.Threads);
            Assert.Equal(["b:2", "c:3"], node.Seeds);
            Assert.Equal(["worker"], node.Roles);
            Assert.Equal(7, node.Job.MaxAttempts);
            Assert.Equal("/from/file.pem", node.CaCertificate);

            var unknown = Assert.Throws<UsageException>(() => ClusterSettings.Load(file, [], new Dictionary<string, string?> { ["ATTENTION_JOB__MAXATTEMPS"] = "2" }));
            Assert.Contains("JOB:MAXATTEMPS", unknown.Message, StringComparison.OrdinalIgnoreCase);
            var range = Assert.Throws<UsageException>(() => ClusterSettings.Node(ClusterSettings.Load(null, [new("Node:Port", "70000")], new Dictionary<string, string?>())));
            Assert.Contains("Node:Port", range.Message, StringComparison.Ordinal);
            var path = Assert.Throws<UsageException>(() => ClusterSettings.Node(ClusterSettings.Load(null, [new("Node:KernelPath", "Vector1024")], new Dictionary<string, string?>())));
            Assert.Contains("Vector512", path.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("--listen needs --cluster", "run", "--random", "--seq", "8", "--dim", "8", "--listen", "0.0.0.0:0")]
    [InlineData("--advertise needs --cluster", "mha", "--x", "x.npy", "--wq", "w", "--wk", "w", "--wv", "w", "--wo", "w", "--heads", "1", "--out", "y.npy", "--advertise", "h")]
    [InlineData("--audit needs --cluster", "run", "--random", "--seq", "8", "--dim", "8", "--audit", "0.5")]
    [InlineData("--listen 'nowhere' must be address:port", "run", "--random", "--seq", "8", "--dim", "8", "--cluster", "h:1", "--listen", "nowhere")]
    [InlineData("unknown setting 'Client:Clustre'", "run", "--random", "--seq", "8", "--dim", "8", "--cluster", "h:1", "--config", "bad-key.json")]
    public async Task Cluster_flags_out_of_place_or_wrong_are_usage_errors(string message, params string[] args)
    {
        string dir = Directory.CreateTempSubdirectory("attention-flags-").FullName;
        File.WriteAllText(Path.Combine(dir, "bad-key.json"), """{ "Client": { "Clustre": "h:1" } }""");
        string previous = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = dir;
            var (code, _, err) = await CliRunner.Run(args);
            Assert.True(code == 2 && err.Contains(message, StringComparison.Ordinal), $"exit {code}: {err}");
        }
        finally
        {
            Environment.CurrentDirectory = previous;
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData(null, 0L)]
    [InlineData(1L << 20, 1L << 20)]
    public void A_cluster_job_without_max_shard_bytes_leaves_the_shard_size_to_its_coordinator(long? asked, long sent)
    {
        // 0 tells the coordinator to use its own Node:MaxShardBytes; the embedded default must not travel.
        var request = new RunRequest { MaxShardBytes = asked, Cluster = () => new AttentionActors.Cluster.Client.ClusterClientOptions { Cluster = "h:1" } };
        var options = RunJob.ClusterOptionsOf(request);
        Assert.True(options?.MaxShardBytes == sent, $"the client asks for {options?.MaxShardBytes} shard bytes, not {sent}");
    }
}
