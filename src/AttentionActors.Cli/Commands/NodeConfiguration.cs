using System.Globalization;
using AttentionActors.Cluster;
using AttentionActors.Cluster.Transport;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using Microsoft.Extensions.Configuration;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// Every configuration key of a cluster node, with its unit and default: read from a JSON file
/// (<c>--config</c>, sections <c>Broker</c>, <c>Node</c>, <c>Job</c>), then environment variables
/// (<c>ATTENTION_SECTION__KEY</c>), then flags — later sources win. An unknown key is an error, so a
/// misspelt setting never silently falls back to its default. <c>cluster-config/README.md</c> lists the same table.
/// </summary>
internal static class NodeConfiguration
{
    public const string EnvironmentPrefix = "ATTENTION_";

    /// <summary>Key, unit, default and meaning of every setting, in documentation order.</summary>
    public static readonly IReadOnlyList<(string Key, string Unit, string Default, string Meaning)> Keys =
    [
        ("Broker:Url", "URL", "amqp://localhost:5672/", "the broker; amqps:// for TLS; user and password may be in it (they are redacted in logs)"),
        ("Broker:UserName", "text", "(none)", "user when the URL names none; no guest account is assumed"),
        ("Broker:Password", "text", "(none)", "password when the URL holds none (prefer PasswordFile)"),
        ("Broker:PasswordFile", "path", "(none)", "file whose first line is the password"),
        ("Broker:CaFile", "path", "(none)", "PEM of the CA that signed the broker's certificate (amqps://)"),
        ("Broker:ConnectTimeoutSeconds", "s", "15", "how long a node tries to reach the broker at start before exiting 1"),
        ("Broker:MaxMessageBytes", "bytes", "8388608", "largest message sent or accepted; shards are planned to fit"),
        ("Broker:Prefix", "text", "attention", "prefix of every exchange and queue, so clusters can share a broker"),
        ("Broker:DeliveryLimit", "count", "3", "deliveries of one shard before it is dead-lettered (it keeps killing workers)"),
        ("Broker:PublishTimeoutSeconds", "s", "30", "wait for a publish confirmation before dropping the channel"),
        ("Broker:HeartbeatIntervalSeconds", "s", "1", "interval between a node's heartbeats"),
        ("Broker:NodeTimeoutSeconds", "s", "5", "a node silent this long is taken for dead"),
        ("Node:Name", "text", "ROLES-HOST-PID", "unique node name (letters, digits, '-', '_', '.')"),
        ("Node:Roles", "list", "coordinator,worker,reducer", "roles this node plays"),
        ("Node:Threads", "count", "cores", "worker threads, each computing one shard at a time"),
        ("Node:KernelPath", "name", "Auto", "SIMD path: Auto, Vector512, Vector256, Vector128, Scalar (all give the same bits)"),
        ("Node:MaxJobBytes", "bytes", "half the memory", "most bytes of Q, K and V a coordinator holds for one job"),
        ("Node:MaxShardBytes", "bytes", "MaxMessageBytes − 256 KiB", "largest shard the planner cuts"),
        ("Node:ShutdownTimeoutSeconds", "s", "30", "how long a stopping node waits for its running shards"),
        ("Node:Fault", "text", "(none)", "testing only: exit-on-value=X kills the worker on a shard whose Q holds X; flip-bit flips one bit of every partial"),
        ("Job:ShardTimeoutSeconds", "s", "30", "time every started shard gets before its share by size"),
        ("Job:MinWorkerFlops", "FLOP/s", "500000000", "slowest worker speed a shard's deadline allows for"),
        ("Job:MaxAttempts", "count", "3", "attempts per shard before its job fails"),
        ("Job:StallTimeoutSeconds", "s", "300", "a job fails when no shard starts or finishes for this long"),
        ("Job:ResultGraceSeconds", "s", "5", "how long a client waits for its result after the coordinator or reducer node died"),
    ];

    /// <summary>Loads the sources in order and binds them; throws <see cref="UsageException"/> naming a bad or unknown key.</summary>
    public static (NodeOptions Node, BrokerOptions Broker) Load(string? file, IEnumerable<KeyValuePair<string, string?>> flags, IDictionary<string, string?>? environment = null)
    {
        var builder = new ConfigurationBuilder();
        if (file is not null)
        {
            if (!File.Exists(file))
            {
                throw new UsageException($"--config {file}: no such file");
            }

            builder.AddJsonFile(Path.GetFullPath(file), optional: false);
        }

        builder.AddInMemoryCollection(FromEnvironment(environment));
        builder.AddInMemoryCollection(flags);
        IConfiguration config;
        try
        {
            config = builder.Build();
        }
        catch (Exception ex) when (ex is FormatException or InvalidDataException)
        {
            throw new UsageException($"--config {file}: {ex.Message}");
        }

        return Bind(config);
    }

    /// <summary>The <c>ATTENTION_SECTION__KEY</c> variables as configuration keys (<c>Section:Key</c>).</summary>
    public static IEnumerable<KeyValuePair<string, string?>> FromEnvironment(IDictionary<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>().ToDictionary(e => (string)e.Key, e => (string?)e.Value);
        return environment
            .Where(e => e.Key.StartsWith(EnvironmentPrefix, StringComparison.Ordinal) && e.Key.Contains("__", StringComparison.Ordinal))
            .Select(e => new KeyValuePair<string, string?>(e.Key[EnvironmentPrefix.Length..].Replace("__", ":", StringComparison.Ordinal), e.Value));
    }

    private static (NodeOptions, BrokerOptions) Bind(IConfiguration config)
    {
        var known = Keys.Select(k => k.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, value) in config.AsEnumerable())
        {
            if (value is not null && !known.Contains(key))
            {
                throw new UsageException($"unknown setting '{key}' (known: {string.Join(", ", Keys.Select(k => k.Key))})");
            }
        }

        var broker = new BrokerOptions();
        broker = broker with
        {
            Url = config["Broker:Url"] ?? broker.Url,
            UserName = config["Broker:UserName"],
            Password = config["Broker:Password"],
            PasswordFile = config["Broker:PasswordFile"],
            CaFile = config["Broker:CaFile"],
            ConnectTimeout = Seconds(config, "Broker:ConnectTimeoutSeconds") ?? broker.ConnectTimeout,
            MaxMessageBytes = (int?)Number(config, "Broker:MaxMessageBytes", 1, int.MaxValue) ?? broker.MaxMessageBytes,
            Prefix = config["Broker:Prefix"] ?? broker.Prefix,
            DeliveryLimit = (int?)Number(config, "Broker:DeliveryLimit", 1, 1000) ?? broker.DeliveryLimit,
            PublishTimeout = Seconds(config, "Broker:PublishTimeoutSeconds") ?? broker.PublishTimeout,
            HeartbeatInterval = Seconds(config, "Broker:HeartbeatIntervalSeconds") ?? broker.HeartbeatInterval,
            NodeTimeout = Seconds(config, "Broker:NodeTimeoutSeconds") ?? broker.NodeTimeout,
        };
        var job = new JobOptions();
        job = job with
        {
            ShardTimeout = Seconds(config, "Job:ShardTimeoutSeconds") ?? job.ShardTimeout,
            MinWorkerFlops = Number(config, "Job:MinWorkerFlops", 1, 1e18) ?? job.MinWorkerFlops,
            MaxAttempts = (int?)Number(config, "Job:MaxAttempts", 1, 1000) ?? job.MaxAttempts,
            StallTimeout = Seconds(config, "Job:StallTimeoutSeconds") ?? job.StallTimeout,
            ResultGrace = Seconds(config, "Job:ResultGraceSeconds") ?? job.ResultGrace,
        };
        var node = new NodeOptions();
        node = node with
        {
            Name = config["Node:Name"],
            Roles = config["Node:Roles"] is { } roles ? [.. roles.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(r => r.ToLowerInvariant())] : node.Roles,
            Threads = (int?)Number(config, "Node:Threads", 1, 1024) ?? node.Threads,
            KernelPath = config["Node:KernelPath"] is { } path ? Enum.TryParse<KernelPath>(path, ignoreCase: true, out var p) ? p : throw new UsageException($"Node:KernelPath '{path}' must be one of {string.Join(", ", Enum.GetNames<KernelPath>())}") : node.KernelPath,
            MaxJobBytes = (long?)Number(config, "Node:MaxJobBytes", 1, long.MaxValue) ?? node.MaxJobBytes,
            MaxShardBytes = (long?)Number(config, "Node:MaxShardBytes", 4096, long.MaxValue),
            ShutdownTimeout = Seconds(config, "Node:ShutdownTimeoutSeconds") ?? node.ShutdownTimeout,
            Fault = config["Node:Fault"],
            Job = job,
        };
        try
        {
            broker.Validate();
            node.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message);
        }

        return (node, broker);
    }

    private static double? Number(IConfiguration config, string key, double min, double max)
    {
        if (config[key] is not { } text)
        {
            return null;
        }

        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !(value >= min && value <= max))
        {
            throw new UsageException($"setting {key} = '{text}' must be a number between {min:G} and {max:G}");
        }

        return value;
    }

    private static TimeSpan? Seconds(IConfiguration config, string key)
        => Number(config, key, 0.001, 86400 * 7) is { } s ? TimeSpan.FromSeconds(s) : null;
}
