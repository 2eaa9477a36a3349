using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// What a job will cost, from its shapes alone (nothing allocated yet): the memory it needs, part
/// by part, against what the machine has available, and, once <see cref="WithSpeed"/> gives it the
/// kernel speed measured on this machine just now, the time it should take.
/// </summary>
internal sealed record JobEstimate(IReadOnlyList<(string Part, long Bytes)> Parts, long AvailableBytes, double Flops, double FlopsPerSecond, int Threads)
{
    /// <summary>
    /// Query rows of the speed probe's shard: as many as one of the job's shards scores each key
    /// for (a head's rows, or a decoding step's group of query heads stacked), at most 128. A shard
    /// of a few rows reads every key for those rows only: a decoding step of one row on 32 query
    /// heads over 8 was estimated 5–10× too quick by a 128-row probe.
    /// </summary>
    internal static int ProbeRows(AttentionGeometry g) => Math.Min(128, (KeyGroupStacking.Stack(g) ?? g).QuerySeq);

    /// <summary>The runtime, code and scratch not tied to the job's size.</summary>
    private const long BaseBytes = 96L << 20;

    public long NeededBytes => Parts.Sum(p => p.Bytes);

    /// <summary>Share of the available memory a job may plan to use: the rest is headroom for the page cache, the GC and everything else.</summary>
    public const double UsableShare = 0.9;

    public long UsableBytes => (long)(AvailableBytes * UsableShare);

    public bool Fits => NeededBytes <= UsableBytes;

    public TimeSpan Time => TimeSpan.FromSeconds(Flops / Math.Max(FlopsPerSecond * Threads, 1));

    /// <param name="geometry">The job.</param>
    /// <param name="inputBytesOnHeap">Bytes of Q, K and V held in memory (generated or converted from float64; memory-mapped float32 files count 0).</param>
    /// <param name="outputMapped">The output goes to a memory-mapped file rather than memory.</param>
    /// <param name="workers">Workers (or threads) computing at once.</param>
    /// <param name="maxShardBytes">The planner's shard budget.</param>
    /// <param name="verify">A second full output (the other computation) and the reference rows.</param>
    /// <param name="memoryLimit">Caps the memory counted as available (null: what the machine has).</param>
    public static JobEstimate For(AttentionGeometry geometry, long inputBytesOnHeap, bool outputMapped, int workers, long maxShardBytes, bool verify, long? memoryLimit = null)
    {
        long output = 4L * geometry.Batch * geometry.Heads * geometry.QuerySeq * geometry.ValueDim;
        long lse = 4L * geometry.Batch * geometry.Heads * geometry.QuerySeq;
        var parts = new List<(string, long)>
        {
            ("Q, K, V", inputBytesOnHeap),
            (outputMapped ? "lse (output memory-mapped)" : "output and lse", (outputMapped ? 0 : output) + lse),

            // Each worker holds one shard's input views, key pack and partials; the reducer holds
            // partials of key-split shards until their partners arrive: a few budgets per worker.
            ("shards in flight", 3L * (workers + 1) * maxShardBytes),
            ("runtime", BaseBytes),
        };
        if (verify)
        {
            parts.Add(("--verify's second output", output + lse));
        }

        int threads = Math.Min(workers, Environment.ProcessorCount);
        long available = Math.Min(AvailableMemory(), memoryLimit ?? long.MaxValue);
        return new JobEstimate(parts, available, geometry.VisibleFlops(), 0, threads);
    }

    /// <summary>This estimate with the kernel speed <see cref="MeasureSpeed"/> found, which its <see cref="Time"/> needs.</summary>
    public JobEstimate WithSpeed(double flopsPerSecond) => this with { FlopsPerSecond = flopsPerSecond };

    public string DescribeNeed() => string.Join("; ", Parts.Where(p => p.Bytes > 0).Select(p => $"{p.Part} {Size(p.Bytes)}"));

    public static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F1} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F0} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F0} KiB"),
    };

    public static string Duration(TimeSpan t) => t.TotalSeconds switch
    {
        < 1 => string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:F2} s"),
        < 120 => string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:F1} s"),
        < 7200 => string.Create(CultureInfo.InvariantCulture, $"{t.TotalMinutes:F1} min"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{t.TotalHours:F1} h"),
    };

    /// <summary>Memory the job may use: the kernel's MemAvailable (free plus reclaimable), capped by the runtime's limit (a container's, say).</summary>
    private static long AvailableMemory()
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                {
                    long kib = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                    return Math.Min(limit, kib * 1024);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
        }

        return limit;
    }

    /// <summary>
    /// FLOP/s of one thread of the kernel on this machine for this job's score function and head
    /// dims: a dense shard of <see cref="ProbeRows"/> × 2048, timed for 15 ms after one warm-up run —
    /// or only until the probe has done the job's own FLOPs, since a job that small takes less time
    /// than the probe already has. Every job's start waits for it; over ten dry runs 15 ms gave
    /// 64–78 GFLOP/s, 30 ms 67–81. The speed is the FLOPs over the thread's CPU time where Linux
    /// offers it (<see cref="ThreadClock"/>): beside an actor system's start three busy threads share
    /// two cores, and over wall time the estimates of a 1.5 s job ranged from 1.5 to 2.9 s. The
    /// probe's keys and values are in cache: a decoding step reading a cache of keys larger than L3
    /// from memory runs slower than it measures.
    /// </summary>
    public static double MeasureSpeed(AttentionGeometry g)
    {
        const int keys = 2048;
        int rows = ProbeRows(g);
        AttentionTensor Make(string name, int n, int d)
        {
            var data = new float[n * d];
            UniformFill.Fill(data, 1, name[0], 1f);
            return AttentionTensor.FromArray(name, data, 1, 1, n, d);
        }

        var o = g.Options;
        var options = new AttentionOptions
        {
            Score = o.Score,
            Scale = o.Scale,
            Temperature = o.Temperature,
            Sigma = o.Sigma,
            Additive = o.Additive,
            SoftCap = o.SoftCap,
            AlibiSlopes = o.AlibiSlopes is { Length: > 0 } slopes ? [slopes[0]] : null,

            // The probe's Nq ≠ Nk: ALiBi needs an alignment there even when the job has none.
            Alignment = o.AlibiSlopes is null ? null : DiagonalAlignment.BottomRight,
            BlockSize = o.BlockSize,
        };
        var problem = AttentionProblem.Create(Make("Q", rows, g.KeyDim), Make("K", keys, g.KeyDim), Make("V", keys, g.ValueDim), options);
        double flops = 2.0 * rows * keys * (g.KeyDim + g.ValueDim), jobFlops = g.VisibleFlops();
        Attention.ComputePartials(problem, 0, 0, 0, rows, 0, problem.BlockCount);
        var clock = Stopwatch.StartNew();
        var cpu = ThreadClock.Now();
        int runs = 0;
        do
        {
            Attention.ComputePartials(problem, 0, 0, 0, rows, 0, problem.BlockCount);
            runs++;
        }
        while (clock.Elapsed.TotalMilliseconds < 15 && flops * runs < jobFlops);

        // The thread's own time where the clock is offered: the probe runs while the runner starts
        // beside it, and time spent waiting for a core is not the kernel's.
        var seconds = ThreadClock.Now() - cpu is { } ran && ran > TimeSpan.Zero ? ran.TotalSeconds : clock.Elapsed.TotalSeconds;
        return flops * runs / seconds;
    }
}
