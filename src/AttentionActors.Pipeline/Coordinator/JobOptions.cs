using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Coordinator;

/// <summary>Deadlines and retries of a job; defaults in brackets.</summary>
public sealed record JobOptions
{
    /// <summary>Time every shard gets once started, before its share by size [30 s].</summary>
    public TimeSpan ShardTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Slowest worker speed the deadline allows for, in FLOP/s [0.5e9].</summary>
    public double MinWorkerFlops { get; init; } = 0.5e9;

    /// <summary>Attempts per shard before the job fails [3].</summary>
    public int MaxAttempts { get; init; } = 3;

    /// <summary>The job fails when no shard starts or finishes for this long [5 min].</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long a client waits for its result after the job's coordinator or reducer has stopped
    /// (a result already on its way still lands) before failing the job [5 s].
    /// </summary>
    public TimeSpan ResultGrace { get; init; } = TimeSpan.FromSeconds(5);

    public TimeSpan DeadlineFor(Shard shard) => ShardTimeout + TimeSpan.FromSeconds(shard.Flops / MinWorkerFlops);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (ShardTimeout <= TimeSpan.Zero || StallTimeout <= TimeSpan.Zero || ResultGrace < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(ShardTimeout), $"job timeouts must be positive: shard {ShardTimeout}, stall {StallTimeout}, result grace {ResultGrace}");
        }

        if (!(MinWorkerFlops > 0) || double.IsInfinity(MinWorkerFlops))
        {
            throw new ArgumentOutOfRangeException(nameof(MinWorkerFlops), $"MinWorkerFlops {MinWorkerFlops} must be finite and > 0");
        }

        if (MaxAttempts < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxAttempts), $"MaxAttempts {MaxAttempts} must be at least 1");
        }
    }
}
