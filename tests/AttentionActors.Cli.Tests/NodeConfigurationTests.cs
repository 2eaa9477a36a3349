using AttentionActors.Cli.Commands;

namespace AttentionActors.Cli.Tests;

public sealed class NodeConfigurationTests
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
            .Where(line => line.StartsWith("| `", StringComparison.Ordinal) && line.Contains(':', StringComparison.Ordinal))
            .Select(line => line.Split('|', StringSplitOptions.TrimEntries))
            .Where(cells => cells[1].Trim('`').Split(':') is [var section, _] && section is "Broker" or "Node" or "Job")
            .ToDictionary(cells => cells[1].Trim('`'), cells => (Unit: cells[2], Default: cells[3]));

        Assert.Equal(NodeConfiguration.Keys.Select(k => k.Key).Order(), rows.Keys.Order());
        foreach (var (key, unit, @default, _) in NodeConfiguration.Keys)
        {
            Assert.Equal((unit, @default), rows[key]);
        }
    }

    [Fact]
    public void File_then_environment_then_flags_win_and_an_unknown_key_is_named()
    {
        string file = Path.Combine(Path.GetTempPath(), $"node-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """{ "Broker": { "Url": "amqp://a@file:1/", "Prefix": "from-file", "DeliveryLimit": 7 }, "Node": { "Threads": 3 } }""");
        try
        {
            var environment = new Dictionary<string, string?> { ["ATTENTION_BROKER__PREFIX"] = "from-env", ["ATTENTION_NODE__THREADS"] = "5", ["UNRELATED"] = "x" };
            var (node, broker) = NodeConfiguration.Load(file, [new("Node:Threads", "6")], environment);
            Assert.Equal("amqp://a@file:1/", broker.Url);
            Assert.Equal("from-env", broker.Prefix);
            Assert.Equal(7, broker.DeliveryLimit);
            Assert.Equal(6, node.Threads);

            var unknown = Assert.Throws<UsageException>(() => NodeConfiguration.Load(file, [], new Dictionary<string, string?> { ["ATTENTION_JOB__MAXATTEMPS"] = "2" }));
            Assert.Contains("JOB:MAXATTEMPS", unknown.Message, StringComparison.OrdinalIgnoreCase);
            var range = Assert.Throws<UsageException>(() => NodeConfiguration.Load(null, [new("Broker:DeliveryLimit", "0")], new Dictionary<string, string?>()));
            Assert.Contains("Broker:DeliveryLimit", range.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
