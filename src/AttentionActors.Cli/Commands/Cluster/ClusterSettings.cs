using System.Globalization;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Node;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using Microsoft.Extensions.Configuration;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>
/// Every setting of a node, a cluster client and an operator, with its unit and default: from a JSON
/// file (<c>--config</c>, sections <c>Node</c>, <c>Tls</c>, <c>Job</c>, <c>Client</c>), then the
/// environment (<c>ATTENTION_SECTION__KEY</c>), then flags — later sources win. An unknown key is an
/// error, so a misspelt setting never falls back to its default silently. Secrets (the certificate's
/// password) come from a file or the environment, never a flag. Certificates default to those
/// <c>attention cluster up</c> and <c>cluster certs</c> write in <see cref="HomeDirectory"/>.
/// </summary>
internal static class ClusterSettings
{
    public const string EnvironmentPrefix = "ATTENTION_";

    /// <summary>Key, unit, default and meaning of every setting, in documentation order (cluster-config/README.md lists the same).</summary>
    public static readonly IReadOnlyList<(string Key, string Unit, string Default, string Meaning)> Keys =
    [
        ("Node:Roles", "list", "coordinator,reducer,worker", "roles this node plays"),
        ("Node:Bind", "address", "127.0.0.1", "address the node's two ports listen on; 0.0.0.0 listens on every interface"),
        ("Node:Advertise", "host", "the bind address", "host name or address other nodes and clients reach this node at; with Bind 0.0.0.0, the address this host reaches the first seed from (a seed's host name)"),
        ("Node:Port", "port", "0 (any)", "cluster port (Akka.Remote over TLS); give the seed a fixed one"),
        ("Node:DataPort", "port", "0 (any)", "data port (shard data, results, clients' jobs, operators' commands); give the seed a fixed one"),
        ("Node:Seeds", "list", "(none: this node is the first seed)", "cluster addresses host:port of the seed nodes to join"),
        ("Node:Threads", "count", "cores", "worker threads, each computing one shard at a time"),
        ("Node:KernelPath", "name", "Auto", "SIMD path: Auto, Vector512, Vector256, Vector128, Scalar (all give the same bits)"),
        ("Node:StableAfterSeconds", "s", "5", "membership must be stable this long before unreachable nodes are downed (keep-majority)"),
        ("Node:JoinTimeoutSeconds", "s", "60", "how long a starting node waits to be Up in its seeds' cluster before it exits 1"),
        ("Node:ShutdownTimeoutSeconds", "s", "30", "how long a stopping or drained node waits for its running shards"),
        ("Node:MaxShardBytes", "bytes", "16777216", "largest shard the coordinator cuts: its Q rows, its partials and the K/V it holds at a time"),
        ("Node:MaxShards", "count", "65536", "most shards one job's plan may hold"),
        ("Node:BlockStoreBytes", "bytes", "4294967296", "fetched K/V blocks and Q rows a worker node keeps for its running jobs (least recently used evicted first; 0 keeps none)"),
        ("Node:MaxAdmittedBytes", "bytes", "a quarter of the memory", "most bytes of partials a coordinator's running jobs may hold on their reducers"),
        ("Node:ClientTimeoutSeconds", "s", "10", "a job whose client stopped asking after it this long is cancelled"),
        ("Tls:Certificate", "path", "~/.attention/cluster/node.pfx (client.pfx for clients)", "this process's certificate: PKCS#12 with its key, signed by the cluster's CA"),
        ("Tls:Ca", "path", "~/.attention/cluster/ca.pem", "the cluster CA's certificate (PEM)"),
        ("Tls:PasswordFile", "path", "(none)", "file whose first line is the certificate's password (or set ATTENTION_TLS__PASSWORD)"),
        ("Tls:Password", "text", "(none)", "the certificate's password, from the environment only (ATTENTION_TLS__PASSWORD)"),
        ("Job:ShardTimeoutSeconds", "s", "30", "time every shard gets once handed to a worker, before its share by size"),
        ("Job:MinWorkerFlops", "FLOP/s", "500000000", "slowest worker speed a shard's deadline allows for"),
        ("Job:MaxAttempts", "count", "3", "attempts per shard before its job fails"),
        ("Job:StallTimeoutSeconds", "s", "300", "a job fails when no shard starts or finishes for this long"),
        ("Client:Cluster", "host:port", "(required)", "a node's data endpoint to submit to"),
        ("Client:Bind", "address", "127.0.0.1", "address the client's data port listens on (workers fetch its tensors there)"),
        ("Client:Advertise", "host", "the bind address", "host name or address the cluster's nodes reach this client at; with Bind 0.0.0.0, the address this host reaches the cluster from"),
        ("Client:Port", "port", "0 (any)", "the client's data port"),
        ("Client:Resubmits", "count", "2", "times a job is submitted again after its coordinator or reducer node was lost"),
        ("Client:CoordinatorTimeoutSeconds", "s", "5", "a coordinator silent this long is taken for lost"),
        ("Client:ResultGraceSeconds", "s", "5", "how long a result already on its way may take after its coordinator ended the job"),
    ];

    /// <summary>The folder <c>cluster up</c> and <c>cluster certs</c> default to: <c>$ATTENTION_HOME</c>, or <c>~/.attention/cluster</c>.</summary>
    public static string HomeDirectory
        => Environment.GetEnvironmentVariable("ATTENTION_HOME") is { Length: > 0 } home
            ? home
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".attention", "cluster");

    /// <summary>Reads the sources in order; throws <see cref="UsageException"/> naming a bad or unknown key.</summary>
    public static IConfiguration Load(string? file, IEnumerable<KeyValuePair<string, string?>> flags, IDictionary<string, string?>? environment = null)
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
        builder.AddInMemoryCollection(flags.Where(f => f.Value is not null));
        IConfiguration config;
        try
        {
            config = builder.Build();
        }
        catch (Exception ex) when (ex is FormatException or InvalidDataException)
        {
            throw new UsageException($"--config {file}: {ex.Message}");
        }

        var known = Keys.Select(k => k.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, value) in config.AsEnumerable())
        {
            if (value is not null && !known.Contains(key))
            {
                throw new UsageException($"unknown setting '{key}' (known: {string.Join(", ", Keys.Select(k => k.Key))})");
            }
        }

        return config;
    }

    /// <summary>The <c>ATTENTION_SECTION__KEY</c> variables as configuration keys (<c>Section:Key</c>).</summary>
    public static IEnumerable<KeyValuePair<string, string?>> FromEnvironment(IDictionary<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>().ToDictionary(e => (string)e.Key, e => (string?)e.Value);
        return environment
            .Where(e => e.Key.StartsWith(EnvironmentPrefix, StringComparison.Ordinal) && e.Key.Contains("__", StringComparison.Ordinal))
            .Select(e => new KeyValuePair<string, string?>(e.Key[EnvironmentPrefix.Length..].Replace("__", ":", StringComparison.Ordinal), e.Value));
    }

    /// <summary>A node's options; throws <see cref="UsageException"/> naming the first bad value.</summary>
    public static NodeOptions Node(IConfiguration config)
    {
        var node = new NodeOptions();
        var job = new JobOptions();
        node = node with
        {
            Roles = List(config, "Node:Roles")?.Select(r => r.ToLowerInvariant()).ToList() ?? node.Roles,
            Bind = config["Node:Bind"] ?? node.Bind,
            Advertise = config["Node:Advertise"],
            Port = (int?)Number(config, "Node:Port", 0, 65535) ?? node.Port,
            DataPort = (int?)Number(config, "Node:DataPort", 0, 65535) ?? node.DataPort,
            Seeds = List(config, "Node:Seeds") ?? node.Seeds,
            Threads = (int?)Number(config, "Node:Threads", 1, 1024) ?? node.Threads,
            KernelPath = config["Node:KernelPath"] is { } path ? Enum.TryParse<KernelPath>(path, ignoreCase: true, out var p) ? p : throw new UsageException($"Node:KernelPath '{path}' must be one of {string.Join(", ", Enum.GetNames<KernelPath>())}") : node.KernelPath,
            StableAfter = Seconds(config, "Node:StableAfterSeconds") ?? node.StableAfter,
            JoinTimeout = Seconds(config, "Node:JoinTimeoutSeconds") ?? node.JoinTimeout,
            ShutdownTimeout = Seconds(config, "Node:ShutdownTimeoutSeconds") ?? node.ShutdownTimeout,
            MaxShardBytes = (long?)Number(config, "Node:MaxShardBytes", 64 << 10, long.MaxValue) ?? node.MaxShardBytes,
            MaxShards = (int?)Number(config, "Node:MaxShards", 1, Pipeline.Planning.PlanOptions.ShardsCeiling) ?? node.MaxShards,
            BlockStoreBytes = (long?)Number(config, "Node:BlockStoreBytes", 0, long.MaxValue) ?? node.BlockStoreBytes,
            MaxAdmittedBytes = (long?)Number(config, "Node:MaxAdmittedBytes", 1, long.MaxValue) ?? node.MaxAdmittedBytes,
            ClientTimeout = Seconds(config, "Node:ClientTimeoutSeconds") ?? node.ClientTimeout,
            Certificate = Certificate(config, CertificateAuthority.NodeFile),
            CaCertificate = Ca(config),
            CertificatePassword = Password(config),
            Job = job with
            {
                ShardTimeout = Seconds(config, "Job:ShardTimeoutSeconds") ?? job.ShardTimeout,
                MinWorkerFlops = Number(config, "Job:MinWorkerFlops", 1, 1e18) ?? job.MinWorkerFlops,
                MaxAttempts = (int?)Number(config, "Job:MaxAttempts", 1, 1000) ?? job.MaxAttempts,
                StallTimeout = Seconds(config, "Job:StallTimeoutSeconds") ?? job.StallTimeout,
            },
        };
        try
        {
            node.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message);
        }

        return node;
    }

    /// <summary>A cluster client's options (the job's own, such as the audit fraction, come from the command).</summary>
    public static ClusterClientOptions Client(IConfiguration config)
    {
        var client = new ClusterClientOptions();
        client = client with
        {
            Cluster = config["Client:Cluster"],
            Bind = config["Client:Bind"] ?? client.Bind,
            Advertise = config["Client:Advertise"],
            Port = (int?)Number(config, "Client:Port", 0, 65535) ?? client.Port,
            Resubmits = (int?)Number(config, "Client:Resubmits", 0, 100) ?? client.Resubmits,
            CoordinatorTimeout = Seconds(config, "Client:CoordinatorTimeoutSeconds") ?? client.CoordinatorTimeout,
            ResultGrace = Seconds(config, "Client:ResultGraceSeconds") ?? client.ResultGrace,
            Certificate = Certificate(config, CertificateAuthority.ClientFile),
            CaCertificate = Ca(config),
            CertificatePassword = Password(config),
        };
        try
        {
            client.Validate();
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException)
        {
            throw new UsageException(ex.Message);
        }

        return client;
    }

    /// <summary>An operator's certificates: a node's (the operator's commands are a node's), the CA, and the password.</summary>
    public static (string Certificate, string Ca, string? Password) Operator(IConfiguration config)
        => (Certificate(config, CertificateAuthority.NodeFile), Ca(config), Password(config));

    private static string Certificate(IConfiguration config, string defaultFile) => config["Tls:Certificate"] ?? Path.Combine(HomeDirectory, defaultFile);

    private static string Ca(IConfiguration config) => config["Tls:Ca"] ?? Path.Combine(HomeDirectory, CertificateAuthority.CaFile);

    private static string? Password(IConfiguration config)
    {
        if (config["Tls:PasswordFile"] is not { } file)
        {
            return config["Tls:Password"];
        }

        try
        {
            return File.ReadLines(file).FirstOrDefault() ?? "";
        }
        catch (IOException ex)
        {
            throw new UsageException($"Tls:PasswordFile {file}: {ex.Message}");
        }
    }

    private static List<string>? List(IConfiguration config, string key)
        => config[key] is { } text ? [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)] : null;

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
