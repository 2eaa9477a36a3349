using AttentionActors.Cluster.DataPlane;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;

namespace AttentionActors.Cluster.Node;

/// <summary>The roles a node can play; any subset per process.</summary>
public static class NodeRoles
{
    public const string Coordinator = "coordinator";
    public const string Worker = "worker";
    public const string Reducer = "reducer";

    public static readonly IReadOnlyList<string> All = [Coordinator, Reducer, Worker];
}

/// <summary>How a cluster node runs; defaults in brackets. Every key is listed in <c>cluster-config/README.md</c>.</summary>
public sealed record NodeOptions
{
    /// <summary>Roles this node plays, any of coordinator, reducer, worker [all three].</summary>
    public IReadOnlyList<string> Roles { get; init; } = NodeRoles.All;

    /// <summary>Address the node's ports listen on [127.0.0.1: nothing listens beyond this machine unless asked].</summary>
    public string Bind { get; init; } = "127.0.0.1";

    /// <summary>Host name or address other nodes and clients reach this node at [the bind address, or this machine's name when it binds to all addresses].</summary>
    public string? Advertise { get; init; }

    /// <summary>The cluster port (Akka.Remote over TLS) [0: any free port].</summary>
    public int Port { get; init; }

    /// <summary>The data port: shard data, results, clients' jobs, operators' commands [0: any free port].</summary>
    public int DataPort { get; init; }

    /// <summary>Cluster addresses (host:port) of the seed nodes to join; none makes this node the first seed [none].</summary>
    public IReadOnlyList<string> Seeds { get; init; } = [];

    /// <summary>Worker threads, each computing one shard at a time [one per core].</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>SIMD path of this node's kernels [widest available; every path gives the same bits].</summary>
    public KernelPath KernelPath { get; init; } = KernelPath.Auto;

    /// <summary>This node's certificate: a PKCS#12 file with its key, of the node role [required].</summary>
    public string? Certificate { get; init; }

    /// <summary>The cluster CA's certificate (PEM) [required].</summary>
    public string? CaCertificate { get; init; }

    /// <summary>The certificate file's password, from a file or the environment, never the command line [none].</summary>
    public string? CertificatePassword { get; init; }

    /// <summary>How long membership must be stable before the split-brain resolver downs unreachable nodes (keep-majority) [5 s].</summary>
    public TimeSpan StableAfter { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a starting node waits to be Up in the cluster of its seeds before it gives up [60 s].</summary>
    public TimeSpan JoinTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a stopping or drained node waits for its running shards to be answered [30 s].</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Largest shard the planner cuts, in bytes [16 MiB]: its Q rows, its partials, and the K/V it
    /// holds at a time. An attention job's shards take K/V from their node's block store a chunk at a
    /// time, so their keys are not bounded by it; jobs whose shards are fetched whole (explicit masks,
    /// layer jobs, inspection passes) carry their K/V within it. Memory per worker thread is about two shards.
    /// </summary>
    public long MaxShardBytes { get; init; } = 16L << 20;

    /// <summary>
    /// Bytes of fetched tensors a worker node keeps for its running jobs: K/V blocks and Q rows,
    /// least recently used evicted first, a job's dropped when it ends [4 GiB]. Shards of a head
    /// dealt to this node then fetch its K/V once; 0 fetches every shard's data anew.
    /// </summary>
    public long BlockStoreBytes { get; init; } = 4L << 30;

    /// <summary>Most shards one job's plan may hold [65536].</summary>
    public int MaxShards { get; init; } = 65536;

    /// <summary>Most bytes of partials the jobs a coordinator admits may hold on their reducers at once [a quarter of this machine's memory].</summary>
    public long MaxAdmittedBytes { get; init; } = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>How long a coordinator keeps a job whose client stopped asking after it [10 s].</summary>
    public TimeSpan ClientTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Deadlines and retries of the jobs this node coordinates.</summary>
    public JobOptions Job { get; init; } = new();

    public bool Has(string role) => Roles.Contains(role);

    /// <summary>The host others reach this node at.</summary>
    public string AdvertisedHost => Advertise ?? (!DataEndpoint.IsWildcard(Bind) ? Bind : Seeds.Count > 0 ? DataEndpoint.Toward(DataEndpoint.Parse(Seeds[0]).Host) : System.Net.Dns.GetHostName());

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Roles.Count == 0 || Roles.Any(r => !NodeRoles.All.Contains(r)) || Roles.Distinct().Count() != Roles.Count)
        {
            throw new ArgumentException($"roles '{string.Join(',', Roles)}': give one or more of {string.Join(", ", NodeRoles.All)}, each once", nameof(Roles));
        }

        if (!System.Net.IPAddress.TryParse(Bind, out _))
        {
            throw new ArgumentException($"bind address '{Bind}' is not an IP address (127.0.0.1, 0.0.0.0, …)", nameof(Bind));
        }

        foreach (var (name, port) in new[] { ("port", Port), ("data port", DataPort) })
        {
            if (port is < 0 or > 65535)
            {
                throw new ArgumentOutOfRangeException(nameof(Port), $"{name} {port} must be between 0 (any free port) and 65535");
            }
        }

        foreach (string seed in Seeds)
        {
            try
            {
                DataPlane.DataEndpoint.Parse(seed);
            }
            catch (FormatException ex)
            {
                throw new ArgumentException($"seed {ex.Message}", nameof(Seeds));
            }
        }

        if (Threads is < 1 or > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(Threads), $"{Threads} threads: must be between 1 and 1024");
        }

        if (Certificate is null || CaCertificate is null)
        {
            throw new ArgumentException("a node needs its certificate and the cluster's CA (--cert, --ca; `attention cluster certs` makes them)", nameof(Certificate));
        }

        if (StableAfter < TimeSpan.FromSeconds(1) || ShutdownTimeout <= TimeSpan.Zero || ClientTimeout < TimeSpan.FromSeconds(1) || JoinTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(StableAfter), $"stable-after {StableAfter}, shutdown timeout {ShutdownTimeout} and client timeout {ClientTimeout} must be at least 1 s, positive and at least 1 s");
        }

        if (BlockStoreBytes < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(BlockStoreBytes), $"block store bytes {BlockStoreBytes} must be 0 or more");
        }

        if (MaxShardBytes < 64 << 10 || MaxShards < 1 || MaxAdmittedBytes < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxShardBytes), $"max shard bytes {MaxShardBytes} (at least 64 KiB), max shards {MaxShards} and max admitted bytes {MaxAdmittedBytes} must be positive");
        }

        Job.Validate();
    }
}
