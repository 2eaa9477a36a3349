using System.Diagnostics;
using System.Numerics;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// The machine's read bandwidth from memory, the ceiling of a decoding step: every thread sums its
/// own contiguous part of a buffer far larger than the caches, with independent vector accumulators
/// so the loads, not the adds, set the pace.
/// </summary>
internal static class MemoryBandwidth
{
    /// <summary>Median bytes per second (1e9 = 1 GB/s) of <paramref name="passes"/> reads of <paramref name="bytes"/> on <paramref name="threads"/> threads.</summary>
    public static double Measure(long bytes, int threads, int passes = 7)
    {
        int length = (int)Math.Min(bytes / sizeof(float), Array.MaxLength);
        var data = GC.AllocateUninitializedArray<float>(length);

        // Touch every page first, so the timed passes read memory instead of faulting it in.
        data.AsSpan().Fill(1f);
        var times = new List<double>();
        for (int pass = 0; pass < passes; pass++)
        {
            var sums = new float[threads];
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                long lo = (long)length * t / threads, hi = (long)length * (t + 1) / threads;
                sums[t] = Sum(data.AsSpan((int)lo, (int)(hi - lo)));
            });
            times.Add(sw.Elapsed.TotalSeconds);
            GC.KeepAlive(sums);
        }

        times.Sort();
        return length * (double)sizeof(float) / times[times.Count / 2];
    }

    private static float Sum(ReadOnlySpan<float> span)
    {
        var a0 = Vector<float>.Zero;
        var a1 = Vector<float>.Zero;
        var a2 = Vector<float>.Zero;
        var a3 = Vector<float>.Zero;
        int w = Vector<float>.Count;
        int i = 0;
        for (; i + (4 * w) <= span.Length; i += 4 * w)
        {
            a0 += new Vector<float>(span[i..]);
            a1 += new Vector<float>(span[(i + w)..]);
            a2 += new Vector<float>(span[(i + (2 * w))..]);
            a3 += new Vector<float>(span[(i + (3 * w))..]);
        }

        float sum = Vector.Sum(a0 + a1 + a2 + a3);
        for (; i < span.Length; i++)
        {
            sum += span[i];
        }

        return sum;
    }
}
