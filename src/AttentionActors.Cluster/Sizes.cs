using System.Globalization;

namespace AttentionActors.Cluster;

/// <summary>Byte counts for people: 512 B, 3.2 MiB, 4.0 GiB.</summary>
internal static class Sizes
{
    public static string Format(long bytes) => bytes switch
    {
        < 1024 => $"{bytes} B",
        < 1 << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KiB"),
        < 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024):F1} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024 * 1024):F1} GiB"),
    };
}
