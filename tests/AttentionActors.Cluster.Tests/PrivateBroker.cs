using AttentionActors.Cluster.Transport;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// The run's own broker (a <see cref="LocalBroker"/>: free ports, own user, no guest), started once
/// for every test of the run and stopped at its end; tests keep apart by queue prefix.
/// </summary>
public sealed class PrivateBroker : IAsyncLifetime
{
    private static int prefixes;
    private LocalBroker? broker;

    private LocalBroker Broker => broker ?? throw new InvalidOperationException("the private broker is not started");

    public string Url => Broker.Url;

    public int Port => Broker.Port;

    public string Password => Broker.Password;

    /// <summary>Broker settings for a test: its own queue prefix, quick heartbeats and node timeouts.</summary>
    public BrokerOptions Options(string? prefix = null) => new()
    {
        Url = Url,
        Prefix = prefix ?? NewPrefix(),
        HeartbeatInterval = TimeSpan.FromMilliseconds(250),
        NodeTimeout = TimeSpan.FromSeconds(2),
        ConnectTimeout = TimeSpan.FromSeconds(10),
    };

    public static string NewPrefix() => $"t{Interlocked.Increment(ref prefixes)}-{Guid.NewGuid().ToString("N")[..6]}";

    public Task RestartAppAsync(TimeSpan down) => Broker.RestartAppAsync(down);

    /// <summary>Messages (ready and unacknowledged) in the work queue of the cluster with <paramref name="prefix"/>, from rabbitmqctl.</summary>
    public int WorkQueueDepth(string prefix)
    {
        var (_, output) = Broker.Ctl(TimeSpan.FromSeconds(30), "list_queues", "-q", "name", "messages").GetAwaiter().GetResult();
        string? line = output.Split('\n').FirstOrDefault(l => l.StartsWith($"{prefix}.work\t", StringComparison.Ordinal));
        return line is null ? -1 : int.Parse(line.Split('\t')[1].Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task InitializeAsync() => broker = await LocalBroker.StartAsync();

    public async Task DisposeAsync()
    {
        if (broker is not null)
        {
            await broker.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class BrokerCollection : ICollectionFixture<PrivateBroker>
{
    public const string Name = "private broker";
}
