using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Transport;
using AttentionActors.Kernels;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// Node processes on the private broker under one queue prefix, and an in-process client joined
/// to them. Disposing kills whatever is still running.
/// </summary>
public sealed class ClusterHarness : IAsyncDisposable
{
    private readonly List<NodeProcess> nodes = [];

    private ClusterHarness(BrokerOptions broker, ClusterClient client)
    {
        Broker = broker;
        Client = client;
    }

    public BrokerOptions Broker { get; }

    public ClusterClient Client { get; }

    public IReadOnlyList<NodeProcess> Nodes => nodes;

    public static async Task<ClusterHarness> StartAsync(PrivateBroker broker, Func<BrokerOptions, BrokerOptions>? configure = null)
    {
        var options = broker.Options();
        options = configure?.Invoke(options) ?? options;
        var client = await ClusterClient.ConnectAsync(options, resultGrace: TimeSpan.FromSeconds(2));
        return new ClusterHarness(options, client);
    }

    public NodeProcess Start(string name, string roles, int threads = 1, IDictionary<string, string>? environment = null, params string[] extra)
    {
        var node = NodeProcess.StartNode(Broker, name, roles, threads, environment, extra);
        nodes.Add(node);
        return node;
    }

    /// <summary>Waits until every named node's heartbeat has reached the client.</summary>
    public async Task WaitForNodes(TimeSpan timeout, params string[] names)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (names.Except(Client.Members.Select(m => m.Heartbeat.Node)).Any())
        {
            if (DateTime.UtcNow > deadline)
            {
                string missing = string.Join(", ", names.Except(Client.Members.Select(m => m.Heartbeat.Node)));
                string logs = string.Join("\n---\n", nodes.Where(n => missing.Contains(n.Name, StringComparison.Ordinal)).Select(n => $"{n.Name}:\n{n.Tail()}"));
                throw new TimeoutException($"nodes {missing} sent no heartbeat within {timeout.TotalSeconds:F0} s\n{logs}");
            }

            await Task.Delay(50);
        }
    }

    public Member Member(string name) => Client.Members.Single(m => m.Heartbeat.Node == name);

    /// <summary>The standard topology: one coordinator, one reducer and the given workers, all up.</summary>
    public async Task StartTopology(params (string Name, IDictionary<string, string>? Environment)[] workers)
    {
        Start("coordinator", NodeRoles.Coordinator);
        Start("reducer", NodeRoles.Reducer);
        foreach (var (name, environment) in workers)
        {
            Start(name, NodeRoles.Worker, environment: environment);
        }

        await WaitForNodes(TimeSpan.FromSeconds(30), ["coordinator", "reducer", .. workers.Select(w => w.Name)]);
    }

    /// <summary>Waits until <paramref name="condition"/> holds (checked every 50 ms), or fails naming <paramref name="what"/> with every node's last log lines.</summary>
    public async Task Eventually(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{what}: not within {timeout.TotalSeconds:F0} s\n{Logs()}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>The last heartbeat of <paramref name="name"/>, or null when it is not a live member.</summary>
    public Member? Find(string name) => Client.Members.FirstOrDefault(m => m.Heartbeat.Node == name);

    /// <summary>The task's result, or a timeout that shows every node's last log lines.</summary>
    public async Task<T> Within<T>(Task<T> task, TimeSpan timeout)
    {
        if (await Task.WhenAny(task, Task.Delay(timeout)) != task)
        {
            throw new TimeoutException($"no result within {timeout.TotalSeconds:F0} s\n{Logs()}");
        }

        return await task;
    }

    public string Logs() => string.Join("\n---\n", nodes.Select(n => $"{n.Name}:\n{n.Tail(25)}"));

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        foreach (var node in nodes)
        {
            await node.DisposeAsync();
        }
    }

    /// <summary>The job's single-node result, the reference every cluster result must equal bit for bit.</summary>
    public static AttentionResult SingleNode(AttentionProblem problem) => Attention.Compute(problem);
}
