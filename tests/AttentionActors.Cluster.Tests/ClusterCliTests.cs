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
}
