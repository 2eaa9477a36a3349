using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace AttentionActors.Cli.Commands;

/// <summary>What a benchmark names beside its figures: the CPU, and its fused multiply-add peak measured on the spot.</summary>
internal static class MachineInfo
{
    private static readonly ConcurrentDictionary<int, double> Peaks = new();

    /// <summary>
    /// The CPU's model name from /proc/cpuinfo with its family and model numbers and the first
    /// core's data caches, or "an unnamed CPU". A virtual machine may name only "AMD EPYC", and
    /// decoding's share of the memory bandwidth turned on the L1's size (33% on a 32 KiB L1 against
    /// 74% on a 48 KiB one, before the transposition asked its keys into L2).
    /// </summary>
    public static string Cpu()
    {
        // The first processor's fields: the lines before the first blank one, "key : value".
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            foreach (var pair in File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0).Select(l => l.Split(':', 2)).Where(p => p.Length == 2))
            {
                fields.TryAdd(pair[0].Trim(), pair[1].Trim());
            }
        }
        catch (IOException)
        {
        }

        string name = fields.GetValueOrDefault("model name", "an unnamed CPU");
        var details = new List<string>();
        if (fields.TryGetValue("cpu family", out string? family) && fields.TryGetValue("model", out string? model))
        {
            details.Add($"family {family}, model {model}");
        }

        string caches = string.Join(", ", DataCaches());
        if (caches.Length > 0)
        {
            details.Add(caches);
        }

        return details.Count == 0 ? name : $"{name} ({string.Join("; ", details)})";
    }

    /// <summary>The first core's data and unified caches from sysfs, as "L1d 32 KiB", "L2 1 MiB"…; none where sysfs does not say.</summary>
    private static List<string> DataCaches()
    {
        var found = new List<string>();
        try
        {
            foreach (string dir in Directory.EnumerateDirectories("/sys/devices/system/cpu/cpu0/cache", "index*").Order(StringComparer.Ordinal))
            {
                string type = File.ReadAllText(Path.Combine(dir, "type")).Trim();
                string level = File.ReadAllText(Path.Combine(dir, "level")).Trim();
                string size = File.ReadAllText(Path.Combine(dir, "size")).Trim();
                if (type == "Instruction" || !size.EndsWith('K') || !long.TryParse(size[..^1], out long kib))
                {
                    continue;
                }

                string label = type == "Data" ? $"L{level}d" : $"L{level}";
                found.Add(kib >= 1024 && kib % 1024 == 0 ? $"{label} {kib / 1024} MiB" : $"{label} {kib} KiB");
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return [];
        }

        return found;
    }

    /// <summary>
    /// GFLOP/s of <paramref name="threads"/> threads doing nothing but independent 512-bit fused
    /// multiply-adds (256-bit where 512 is not accelerated): the ceiling a kernel's figure is a
    /// fraction of. Another process on the machine can only slow a probe down, so this is the best
    /// of five short probes (about 15 ms each), and each call probes again and returns the best
    /// seen so far for that thread count: a peak caught while the machine was busy is raised by a
    /// later call, never kept.
    /// </summary>
    public static double FmaPeakGflops(int threads)
    {
        const long Iterations = 10_000_000;
        int lanes = Vector512.IsHardwareAccelerated ? 16 : 8;
        double best = 0;
        var sums = new float[threads];
        for (int probe = 0; probe < 5; probe++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => sums[i] = Vector512.IsHardwareAccelerated ? Spin512(Iterations) : Spin256(Iterations));
            best = Math.Max(best, threads * Iterations * 12.0 * lanes * 2 / sw.Elapsed.TotalSeconds / 1e9);
        }

        return Peaks.AddOrUpdate(threads, best, (_, seen) => Math.Max(seen, best));
    }

    /// <summary>Twelve independent FMA chains, enough to cover the latency of two pipes; compiled optimized at once (a loop run once would start unoptimized).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Spin512(long iterations)
    {
        var m = Vector512.Create(0.999999f);
        var add = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, m, add);
            a1 = Vector512.FusedMultiplyAdd(a1, m, add);
            a2 = Vector512.FusedMultiplyAdd(a2, m, add);
            a3 = Vector512.FusedMultiplyAdd(a3, m, add);
            a4 = Vector512.FusedMultiplyAdd(a4, m, add);
            a5 = Vector512.FusedMultiplyAdd(a5, m, add);
            a6 = Vector512.FusedMultiplyAdd(a6, m, add);
            a7 = Vector512.FusedMultiplyAdd(a7, m, add);
            a8 = Vector512.FusedMultiplyAdd(a8, m, add);
            a9 = Vector512.FusedMultiplyAdd(a9, m, add);
            a10 = Vector512.FusedMultiplyAdd(a10, m, add);
            a11 = Vector512.FusedMultiplyAdd(a11, m, add);
        }

        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Spin256(long iterations)
    {
        var m = Vector256.Create(0.999999f);
        var add = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, m, add);
            a1 = Vector256.FusedMultiplyAdd(a1, m, add);
            a2 = Vector256.FusedMultiplyAdd(a2, m, add);
            a3 = Vector256.FusedMultiplyAdd(a3, m, add);
            a4 = Vector256.FusedMultiplyAdd(a4, m, add);
            a5 = Vector256.FusedMultiplyAdd(a5, m, add);
            a6 = Vector256.FusedMultiplyAdd(a6, m, add);
            a7 = Vector256.FusedMultiplyAdd(a7, m, add);
            a8 = Vector256.FusedMultiplyAdd(a8, m, add);
            a9 = Vector256.FusedMultiplyAdd(a9, m, add);
            a10 = Vector256.FusedMultiplyAdd(a10, m, add);
            a11 = Vector256.FusedMultiplyAdd(a11, m, add);
        }

        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
