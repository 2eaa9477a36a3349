using System.Runtime.Intrinsics;

namespace AttentionActors.Kernels.Simd;

/// <summary>Which SIMD width a computation runs at.</summary>
public enum KernelPath
{
    /// <summary>The widest width this machine accelerates.</summary>
    Auto,
    Vector512,
    Vector256,
    Vector128,
    Scalar,
}

/// <summary>Picks the SIMD width.</summary>
public static class Lanes
{
    /// <summary>Lanes of the widest accelerated vector: 16, 8, 4 or 1.</summary>
    public static int Width { get; } =
        Vector512.IsHardwareAccelerated ? 16 :
        Vector256.IsHardwareAccelerated ? 8 :
        Vector128.IsHardwareAccelerated ? 4 : 1;

    /// <summary>Resolves <see cref="KernelPath.Auto"/> to the widest accelerated path.</summary>
    public static KernelPath Resolve(KernelPath path) => path != KernelPath.Auto ? path : Width switch
    {
        16 => KernelPath.Vector512,
        8 => KernelPath.Vector256,
        4 => KernelPath.Vector128,
        _ => KernelPath.Scalar,
    };
}
