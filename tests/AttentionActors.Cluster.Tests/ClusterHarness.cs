using System.Globalization;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;

namespace AttentionActors.Cluster.Tests;

/// <summary>The certificates every cluster of a test run shares: one CA and its node and client certificates, made once.</summary>
public static class TestCertificates
{
    private static readonly Lazy<string> Made = new(() =>
    {
        string dir = System.IO.Directory.CreateTempSubdirectory("attention-test-ca-").FullName;
        CertificateAuthority.Create(dir);
        return dir;
    });

    public static string Directory => Made.Value;

    public static string Node => Path.Combine(Directory, CertificateAuthority.NodeFile);

    public static string Client => Path.Combine(Directory, CertificateAuthority.ClientFile);

    public static string Ca => Path.Combine(Directory, CertificateAuthority.CaFile);
}

/// <summary>
/// A cluster of real node processes on loopback: a seed on ports of its own, any other nodes joined
/// to it, in-process clients and an operator connected to it. Disposing kills whatever still runs.
/// </summary>
public sealed class ClusterHarness : IAsyncDisposable
{
    private readonly List<NodeProcess> nodes = [];
    private readonly List<ClusterClient> clients = [];
    private OperatorClient? op;

    public ClusterHarness()
    {
        Port = FreePort();
        DataPort = FreePort();
    }

    public int Port { get; }

    public int DataPort { get; }

    /// <summary>The seed's cluster address, host:port.</summary>
    public string Seed => $"127.0.0.1:{Port}";

    /// <summary>The seed's data endpoint, where clients and operators connect.</summary>
    public string Data => $"127.0.0.1:{DataPort}";

    public IReadOnlyList<NodeProcess> Nodes => nodes;

    public OperatorClient Operator => op ??= OperatorClient.Connect(Data, TestCertificates.Node, TestCertificates.Ca);

    /// <summary>A free TCP port on loopback (the system's choice, released for the node to take).</summary>
    public static int FreePort() => Cli.Commands.Cluster.ClusterBench.FreePort();

    /// <summary>The settings every test node shares: its certificates and quick failure detection.</summary>
    private static Dictionary<string, string> Environment(IDictionary<string, string>? extra)
    {
        var env = new Dictionary<string, string>
        {
            ["ATTENTION_TLS__CERTIFICATE"] = TestCertificates.Node,
            ["ATTENTION_TLS__CA"] = TestCertificates.Ca,
            ["ATTENTION_NODE__STABLEAFTERSECONDS"] = "5",
        };
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
        {
            env[key] = value;
        }

        return env;
    }

    /// <summary>Starts the seed (<c>attention node</c>) on the harness's ports.</summary>
    public NodeProcess StartSeed(string roles = "coordinator,reducer", IDictionary<string, string>? environment = null)
    {
        var node = NodeProcess.Start("seed", Environment(environment), "node", "--roles", roles, "--port", Port.ToString(CultureInfo.InvariantCulture), "--data-port", DataPort.ToString(CultureInfo.InvariantCulture), "--threads", "1", "--log-level", "Debug");
        nodes.Add(node);
        return node;
    }

    /// <summary>Starts <c>attention node</c> with <paramref name="roles"/>, joined to the seed.</summary>
    public NodeProcess Start(string name, string roles, int threads = 1, IDictionary<string, string>? environment = null)
    {
        var node = NodeProcess.Start(name, Environment(environment), "node", "--roles", roles, "--seed", Seed, "--threads", threads.ToString(CultureInfo.InvariantCulture), "--log-level", "Debug");
        nodes.Add(node);
        return node;
    }

    /// <summary>Starts the tests' node host with a fault (<c>flip-bit</c>, <c>exit-on-value=X</c>), joined to the seed.</summary>
    public NodeProcess StartFaulty(string name, string roles, string fault, IDictionary<string, string>? environment = null)
    {
        var node = NodeProcess.StartTestNode(name, environment ?? new Dictionary<string, string>(), "--roles", roles, "--seed", Seed, "--cert", TestCertificates.Node, "--ca", TestCertificates.Ca, "--fault", fault);
        nodes.Add(node);
        return node;
    }

    /// <summary>A client of this cluster (closed with the harness).</summary>
    public async Task<ClusterClient> ClientAsync(Func<ClusterClientOptions, ClusterClientOptions>? configure = null)
    {
        var options = new ClusterClientOptions { Cluster = Data, Certificate = TestCertificates.Client, CaCertificate = TestCertificates.Ca };
        var client = await ClusterClient.ConnectAsync(configure?.Invoke(options) ?? options);
        clients.Add(client);
        return client;
    }

    /// <summary>Waits until <paramref name="count"/> members are Up, reachable and have told their cards; fails showing every node's last lines.</summary>
    public async Task WaitForMembers(int count, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        string last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                var status = await Operator.StatusAsync();
                int up = status.Members.Count(m => m.Status == "Up" && m.Reachable && m.Card is not null);
                last = $"{up} of {count} up: {string.Join(", ", status.Members.Select(m => $"{m.Address} {m.Status}{(m.Reachable ? "" : " unreachable")}"))}";
                if (up >= count)
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is DataPlane.DataPlaneException or IOException)
            {
                last = ex.Message;
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"{count} members were not up within the time ({last})\n{Logs()}");
    }

    /// <summary>Waits until <paramref name="condition"/> holds (checked every 100 ms), or fails naming <paramref name="what"/> with every node's last lines.</summary>
    public async Task Eventually(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{what}: not within {timeout.TotalSeconds:F0} s\n{Logs()}");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>
    /// The task's result, or a timeout that shows every node's last lines. A failure other than a
    /// job's own refusal (a lost node, an unreachable cluster) shows them too: the nodes say why.
    /// </summary>
    public async Task<T> Within<T>(Task<T> task, TimeSpan timeout)
    {
        if (await Task.WhenAny(task, Task.Delay(timeout)) != task)
        {
            throw new TimeoutException($"no result within {timeout.TotalSeconds:F0} s\n{Logs()}");
        }

        try
        {
            return await task;
        }
        catch (Exception ex) when (ex is not AttentionJobException { NodeLost: false })
        {
            throw new ClusterTestException($"{ex.GetType().Name}: {ex.Message}\n{Logs()}", ex);
        }
    }

    /// <summary>Every table of every role on every live node, once the jobs that ran have ended: each must be empty.</summary>
    public async Task AssertJobTablesEmpty(TimeSpan within)
    {
        string left = "";
        await Eventually(
            async () =>
            {
                var tables = await Operator.JobTablesAsync();
                var full = tables.Tables.Where(t => t.Jobs.Count > 0).ToList();
                left = string.Join("; ", full.Select(t => $"{t.Role}: {string.Join(", ", t.Jobs)}"));
                return full.Count == 0 && tables.Tables.Count > 0;
            },
            within,
            $"every role's job table empty (left: {left})");
    }

    public string Logs() => string.Join("\n---\n", nodes.Select(n => $"{n.Name}:\n{n.Tail(25)}"));

    public async ValueTask DisposeAsync()
    {
        foreach (var client in clients)
        {
            await client.DisposeAsync();
        }

        if (op is not null)
        {
            await op.DisposeAsync();
        }

        foreach (var node in nodes)
        {
            await node.DisposeAsync();
        }

        // Every node's whole output, for a failure the last lines do not explain: ATTENTION_TEST_LOGS=folder.
        if (System.Environment.GetEnvironmentVariable("ATTENTION_TEST_LOGS") is { Length: > 0 } folder)
        {
            string run = Path.Combine(folder, $"{DateTime.UtcNow:HHmmss}-{Seed.Replace(':', '-')}");
            Directory.CreateDirectory(run);
            for (int i = 0; i < nodes.Count; i++)
            {
                await File.WriteAllTextAsync(Path.Combine(run, $"{i:D2}-{nodes[i].Name}.log"), nodes[i].Output);
            }
        }
    }

    /// <summary>The job's single-node result, the reference every cluster result must equal bit for bit.</summary>
    public static AttentionResult SingleNode(AttentionProblem problem) => Attention.Compute(problem);
}

/// <summary>A cluster job's unexpected failure, with every node's last lines.</summary>
public sealed class ClusterTestException(string message, Exception inner) : Exception(message, inner);
