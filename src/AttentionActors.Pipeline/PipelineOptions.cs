using Akka.Configuration;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Pipeline;

/// <summary>How the embedded pipeline runs; defaults in brackets.</summary>
public sealed record PipelineOptions
{
    /// <summary>Largest message any role sends by default, in bytes [8 MiB].</summary>
    public const int DefaultMaxMessageBytes = 8 << 20;

    /// <summary>Worker actors, each computing one shard at a time [one per core; at most <see cref="MaxWorkers"/>].</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;

    public PlanOptions Plan { get; init; } = new();

    public JobOptions Job { get; init; } = new();

    /// <summary>SIMD path of the workers' kernels [widest available; every path gives the same bits].</summary>
    public KernelPath KernelPath { get; init; } = KernelPath.Auto;

    /// <summary>Largest message the reducer streams rows in, in bytes; rows messages are also never over 1 MiB (<c>Reducer.RowsMessageBytes</c>) [8 MiB].</summary>
    public int MaxMessageBytes { get; init; } = DefaultMaxMessageBytes;

    /// <summary>Replaces the kernel call of every worker (tests inject faults and delays with it) [null].</summary>
    public ShardComputer? Compute { get; init; }

    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Actor system settings over <see cref="PipelineConfig.Base"/> (tests pass <see cref="PipelineConfig.SerializeMessages"/>) [none].</summary>
    public Config? ActorConfig { get; init; }

    /// <summary>
    /// Most embedded workers: 16 per core, at least 64. More only multiply shards and threads — the
    /// kernel already keeps every core busy with one worker per core.
    /// </summary>
    public static int MaxWorkers => Math.Max(64, 16 * Environment.ProcessorCount);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Workers < 1 || Workers > MaxWorkers)
        {
            throw new ArgumentOutOfRangeException(nameof(Workers), $"{Workers} workers: must be between 1 and {MaxWorkers} (16 per core, at least 64)");
        }

        if (MaxMessageBytes < 64 << 10)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxMessageBytes), $"MaxMessageBytes {MaxMessageBytes} must be at least 64 KiB");
        }

        Job.Validate();
    }
}
