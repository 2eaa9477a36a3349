using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels;

/// <summary>How a single-node computation runs; defaults in brackets.</summary>
public sealed record ComputeOptions
{
    /// <summary>Worker threads; 0 means <see cref="Environment.ProcessorCount"/> [0].</summary>
    public int Threads { get; init; }

    /// <summary>SIMD width; every path gives the same bits, only the speed differs [widest available].</summary>
    public KernelPath KernelPath { get; init; } = KernelPath.Auto;
}
