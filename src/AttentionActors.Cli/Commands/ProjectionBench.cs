using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench --projection</c>: the layer's linear maps <c>y = x·Wᵀ</c>, x [N, E] and
/// W [E, E], against NumPy's <c>x @ W.T</c> on the same shapes and threads when Debian's python3
/// with numpy is present. The two alternate, round by round, and the table gives the medians and the
/// median of the rounds' ratios; a few outputs are checked against float64 first. The header names
/// the BLAS library NumPy loaded: the anchor is OpenBLAS's SGEMM, and Debian's numpy runs on the
/// unoptimized reference BLAS when no optimized one is installed.
/// </summary>
internal static class ProjectionBench
{
    private const string Python = "/usr/bin/python3";

    /// <summary>Times <c>x @ W.T</c> <c>runs</c> times after one warm-up and prints the median seconds.</summary>
    private const string PeerScript = """
        import sys, time
        import numpy as np
        n, e, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, e), dtype=np.float32)
        w = rng.standard_normal((e, e), dtype=np.float32)
        x @ w.T
        times = []
        for _ in range(runs):
            t = time.perf_counter(); x @ w.T; times.append(time.perf_counter() - t)
        print(sorted(times)[len(times) // 2])
        with open("/proc/self/maps") as maps:
            blas = sorted({l.split()[-1] for l in maps if "blas" in l.rsplit("/", 1)[-1].lower() or "mkl" in l.lower()})
        print(" ".join(blas) or "?")
        """;

    public static int Run(TextWriter stdout, TextWriter stderr, int[] rowCounts, int[] dims, int[] threadCounts, int repeat)
    {
        string? library = PeerLibrary();
        bool peer = library is not null;
        int rounds = Math.Max(repeat, 3);
        stdout.WriteLine($"projection y = x·Wᵀ, {MachineInfo.Cpu()}, {Environment.ProcessorCount} cores; median of {rounds} alternating rounds{(peer ? $"; NumPy beside it, {DescribeLibrary(library!)}" : $"; NumPy not found ({Python} with numpy): no peer column")}");
        stdout.WriteLine();
        stdout.WriteLine("| N | E | threads | s | GFLOP/s | of FMA peak | NumPy s | NumPy GFLOP/s | ours / NumPy | max err/tol |");
        stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        bool allPassed = true;
        foreach (int n in rowCounts)
        {
            foreach (int e in dims)
            {
                var x = PipelineBench.Random("x", 1, 1, n, e).Data.ToArray();
                var w = PipelineBench.Random("W", 2, 1, e, e).Data.ToArray();
                double flops = 2.0 * n * e * e;
                foreach (int t in threadCounts)
                {
                    double err = Check(x, w, n, e, t);
                    allPassed &= err <= 1;
                    var ours = new List<double>();
                    var theirs = new List<double>();
                    var ratios = new List<double>();
                    for (int round = 0; round < rounds; round++)
                    {
                        ours.Add(Median(() => Projection.Linear(x, n, e, w, e, null, t)));
                        if (peer)
                        {
                            theirs.Add(PeerSeconds(n, e, t));
                            ratios.Add(theirs[^1] / ours[^1]);
                        }
                    }

                    double s = PipelineBench.Median(ours);
                    string peerColumns = peer
                        ? string.Create(CultureInfo.InvariantCulture, $"{PipelineBench.Median(theirs):F4} | {flops / PipelineBench.Median(theirs) / 1e9:F1} | {PipelineBench.Median(ratios):F2}")
                        : "– | – | –";
                    stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {n} | {e} | {t} | {s:F4} | {flops / s / 1e9:F1} | {flops / s / 1e9 / MachineInfo.FmaPeakGflops(t):P0} | {peerColumns} | {err:F3} |"));
                }
            }
        }

        if (!allPassed)
        {
            stderr.WriteLine("bench: a projection fell outside its error bound (max err/tol > 1)");
            return 1;
        }

        return 0;
    }

    /// <summary>Median of enough runs to fill about half a second (at least three).</summary>
    private static double Median(Action run)
    {
        var times = new List<double>();
        double total = 0;
        while (times.Count < 3 || (total < 0.5 && times.Count < 100))
        {
            var sw = Stopwatch.StartNew();
            run();
            times.Add(sw.Elapsed.TotalSeconds);
            total += times[^1];
        }

        return PipelineBench.Median(times);
    }

    /// <summary>
    /// Worst |y − exact| / (1e-6·(1 + Σ|x·w|)) over 64 sampled outputs, the exact sums in float64:
    /// the bound the projection tests hold every output to.
    /// </summary>
    private static double Check(float[] x, float[] w, int n, int e, int threads)
    {
        var y = Projection.Linear(x, n, e, w, e, null, threads);
        var rng = new Random(7);
        double worst = 0;
        for (int sample = 0; sample < 64; sample++)
        {
            int r = rng.Next(n), c = rng.Next(e);
            double exact = 0, magnitude = 0;
            for (int k = 0; k < e; k++)
            {
                double term = (double)x[((long)r * e) + k] * w[((long)c * e) + k];
                exact += term;
                magnitude += Math.Abs(term);
            }

            worst = Math.Max(worst, Math.Abs(y[((long)r * e) + c] - exact) / (1e-6 * (1 + magnitude)));
        }

        return worst;
    }

    /// <summary>The BLAS libraries NumPy loaded (paths), or null when there is no NumPy to run.</summary>
    private static string? PeerLibrary()
    {
        try
        {
            return File.Exists(Python) ? Peer(64, 64, 1).Library : null;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>What the peer column measures: OpenBLAS's SGEMM only when NumPy loaded OpenBLAS.</summary>
    internal static string DescribeLibrary(string library) => library.Contains("openblas", StringComparison.OrdinalIgnoreCase)
        ? $"x @ W.T on OpenBLAS SGEMM ({library}; OPENBLAS_CORETYPE unset)"
        : $"x @ W.T on {library}, not OpenBLAS: no anchor for the ratio (Debian: apt-get install libopenblas0)";

    private static double PeerSeconds(int n, int e, int threads) => Peer(n, e, threads).Seconds;

    private static (double Seconds, string Library) Peer(int n, int e, int threads)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in new[] { "-c", PeerScript, n.ToString(CultureInfo.InvariantCulture), e.ToString(CultureInfo.InvariantCulture), "5" })
        {
            start.ArgumentList.Add(arg);
        }

        // The environment pins OpenBLAS to its Haswell kernels, which halves it on AVX-512 machines: the peer runs at its best.
        start.Environment.Remove("OPENBLAS_CORETYPE");
        start.Environment.Remove("OPENBLAS_L2_SIZE");
        start.Environment["OPENBLAS_NUM_THREADS"] = threads.ToString(CultureInfo.InvariantCulture);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{Python} did not start");
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return process.ExitCode == 0 && lines.Length == 2 && double.TryParse(lines[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)
            ? (seconds, lines[1])
            : throw new InvalidOperationException($"{Python} failed (exit {process.ExitCode}): {error.Trim()}");
    }
}
