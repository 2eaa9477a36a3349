using System.Diagnostics;
using System.Numerics;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// The machine's read bandwidth from memory, the ceiling of a decoding step: every thread sums its
/// own contiguous part of a buffer far larger than the caches, with independent vector accumulators
/// so the loads, not the adds, set the pace.
/// </summary>
internal sealed class MemoryBandwidth
{
    private readonly float[] data;

    /// <summary>
    /// Allocates the buffer and touches every page, so passes read memory instead of faulting it in.
    /// Its pages are 2 MiB where Linux offers them, as the decoding bench's keys and values are.
    /// </summary>
    public MemoryBandwidth(long bytes)
    {
        data = GC.AllocateUninitializedArray<float>((int)Math.Min(bytes / sizeof(float), Array.MaxLength));
        AttentionActors.Kernels.HugePages.Advise(data);
        data.AsSpan().Fill(1f);
    }

    /// <summary>Bytes per second of one read of the whole buffer on <paramref name="threads"/> threads.</summary>
    public double Pass(int threads)
    {
        var sums = new float[threads];
        var sw = Stopwatch.StartNew();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            long lo = (long)data.Length * t / threads, hi = (long)data.Length * (t + 1) / threads;
            sums[t] = Sum(data.AsSpan((int)lo, (int)(hi - lo)));
        });
        double seconds = sw.Elapsed.TotalSeconds;
        GC.KeepAlive(sums);
        return data.Length * (double)sizeof(float) / seconds;
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
