using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;

namespace AttentionActors.Cluster;

/// <summary>The roles a node can play.</summary>
public static class NodeRoles
{
    public const string Coordinator = "coordinator";
    public const string Worker = "worker";
    public const string Reducer = "reducer";

    /// <summary>A process that only submits jobs (<c>attention run --broker</c>) or reads status.</summary>
    public const string Client = "client";

    public static readonly IReadOnlyList<string> All = [Coordinator, Worker, Reducer];
}

/// <summary>How a cluster node runs; defaults in brackets (every key is listed in <c>cluster-config/README.md</c>).</summary>
public sealed record NodeOptions
{
    /// <summary>Unique node name: letters, digits, '-', '_', '.' [ROLES-HOST-PID].</summary>
    public string? Name { get; init; }

    /// <summary>Roles this node plays, any of coordinator, worker, reducer [all three].</summary>
    public IReadOnlyList<string> Roles { get; init; } = NodeRoles.All;

    /// <summary>Worker actors, each computing one shard at a time on its own thread [one per core].</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>SIMD path of this worker's kernel [widest available; all give the same bits].</summary>
    public KernelPath KernelPath { get; init; } = KernelPath.Auto;

    /// <summary>Most bytes of Q, K and V a coordinator holds for one job [half of this machine's memory].</summary>
    public long MaxJobBytes { get; init; } = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;

    /// <summary>Largest shard the planner cuts, in bytes, when the client asks for none [the message budget less 256 KiB of headroom].</summary>
    public long? MaxShardBytes { get; init; }

    /// <summary>Deadlines and retries of the jobs this node coordinates.</summary>
    public JobOptions Job { get; init; } = new();

    /// <summary>How long a stopping node waits for its running shards to be answered [30 s].</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Testing only: a fault this worker injects. <c>exit-on-value=X</c> kills the process (as by
    /// SIGKILL) when a shard's Q holds the value X; <c>flip-bit</c> flips the lowest bit of one
    /// value of every partial (a machine that computes wrongly, for audits to catch) [none].
    /// </summary>
    public string? Fault { get; init; }

    public bool Has(string role) => Roles.Contains(role);

    /// <summary>The name, or the default built from roles, host and process id.</summary>
    public string ResolveName()
        => Name ?? $"{string.Join('+', Roles.Select(r => r[..1]))}-{Environment.MachineName}-{Environment.ProcessId}".Replace('+', '_');

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Roles.Count == 0 || Roles.Any(r => !NodeRoles.All.Contains(r)))
        {
            throw new ArgumentException($"roles '{string.Join(',', Roles)}': give one or more of {string.Join(", ", NodeRoles.All)}", nameof(Roles));
        }

        string name = ResolveName();
        if (name.Length is 0 or > 100 || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
        {
            throw new ArgumentException($"node name '{name}' must be 1–100 letters, digits, '-', '_' or '.'", nameof(Name));
        }

        if (Threads < 1 || Threads > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(Threads), $"{Threads} threads: must be between 1 and 1024");
        }

        if (MaxJobBytes < 1 || MaxShardBytes is < 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxJobBytes), $"MaxJobBytes {MaxJobBytes} must be positive and MaxShardBytes {MaxShardBytes} at least 4096");
        }

        if (Fault is not null && Fault != "flip-bit" && !(Fault.StartsWith("exit-on-value=", StringComparison.Ordinal) && float.TryParse(Fault["exit-on-value=".Length..], System.Globalization.CultureInfo.InvariantCulture, out _)))
        {
            throw new ArgumentException($"fault '{Fault}': use exit-on-value=X or flip-bit", nameof(Fault));
        }

        Job.Validate();
    }
}
