using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench</c>: GFLOP/s (4·Nq·Nk·d per head, non-causal count) and peak working set of
/// the single-node kernel, each configuration first checked against the float64 reference on
/// sampled rows. Prints a Markdown table.
/// </summary>
internal static class BenchCommand
{
    private const int DefaultHeads = 8;

    private static readonly int[] DefaultSeqs = [1024, 4096, 16384];

    private static readonly int[] DefaultDims = [64, 128];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var seqs = new Option<int[]>("--seq") { Description = "Sequence lengths N (Nq = Nk; with --decode, Nk) [1024 4096 16384; 65536 with --decode]", AllowMultipleArgumentsPerToken = true };
        var dims = new Option<int[]>("--dim") { Description = "Head dims d [64 128; 128 with --decode]", AllowMultipleArgumentsPerToken = true };
        var heads = new Option<int?>("--heads") { Description = "Query heads H [8; 32 with --decode]" };
        var decode = new Option<bool>("--decode") { Description = "Time decoding steps instead: --query-rows rows per head against Nk cached keys (K and V on 2 MiB pages where Linux offers them), reported as K/V GB/s against the measured memory bandwidth and as GFLOP/s against the FMA peak" };
        var queryRows = new Option<int[]>("--query-rows") { Description = "With --decode: query rows Nq per head", DefaultValueFactory = _ => [1, 16], AllowMultipleArgumentsPerToken = true };
        var projection = new Option<bool>("--projection") { Description = "Time the layer's linear maps y = x·Wᵀ instead, x [--seq, --dim] and W [--dim, --dim], beside NumPy's x @ W.T (OpenBLAS) on the same threads [N 8192, E 1024]" };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "With --decode: key/value heads (H/H_kv query heads share each) [8]" };
        var threads = new Option<int[]>("--threads") { Description = "Thread counts", DefaultValueFactory = _ => [1, 2], AllowMultipleArgumentsPerToken = true };
        var repeat = new Option<int>("--repeat") { Description = "Minimum timed runs per configuration; short ones repeat to fill about a second (the median is reported)", DefaultValueFactory = _ => 3 };
        var causal = new Option<bool>("--causal") { Description = "Also time the causal mask and report causal/dense time" };
        var block = new Option<int>("--block") { Description = "Keys per canonical block", DefaultValueFactory = _ => AttentionOptions.DefaultBlockSize };
        var checkRows = new Option<int>("--check-rows") { Description = "Rows checked against the float64 reference per configuration", DefaultValueFactory = _ => 24 };
        var path = new Option<KernelPath>("--path") { Description = "SIMD path", DefaultValueFactory = _ => KernelPath.Auto };
        var pipeline = new Option<bool>("--pipeline") { Description = "Time the embedded pipeline against the single-node kernel instead (alternating runs, bits compared)" };
        var workers = new Option<int>("--workers") { Description = "With --pipeline: workers, and the single-node threads they are compared with; with --cluster: worker processes, and the embedded workers they are compared with [one per core]", DefaultValueFactory = _ => Environment.ProcessorCount };
        var cluster = new Option<bool>("--cluster") { Description = "Time a local cluster of processes (a coordinator+reducer and --workers single-thread worker processes) against the embedded pipeline instead, with formation time (median of --repeat formations, at most 5), data-plane speed and a worker killed mid-job [N 16384, d 64, H 8]" };
        var maxShardBytes = new Option<long>("--max-shard-bytes") { Description = "With --pipeline or --cluster: the planner's shard budget in bytes, on both sides", DefaultValueFactory = _ => new Pipeline.Planning.PlanOptions().MaxShardBytes };
        var command = new Command("bench", "Measure the single-node kernel (GFLOP/s, peak memory), verified against the reference first; or, with --pipeline, the embedded pipeline against it")
        {
            seqs, dims, heads, threads, repeat, causal, block, checkRows, path, pipeline, cluster, workers, maxShardBytes, decode, queryRows, kvHeads, projection,
        };
        command.SetAction(async (r, ct) =>
        {
            string? wrong = Wrong(r.GetValue(seqs), r.GetValue(dims), r.GetValue(heads), r.GetValue(kvHeads), r.GetValue(threads)!, r.GetValue(repeat), r.GetValue(block), r.GetValue(checkRows), r.GetValue(workers), r.GetValue(maxShardBytes));
            if (wrong is not null)
            {
                stderr.WriteLine($"bench: {wrong}");
                return 2;
            }

            return r.GetValue(cluster)
            ? await Cluster.ClusterBench.RunAsync(stdout, stderr, Given(r.GetValue(seqs), [16384])[0], Given(r.GetValue(dims), [64])[0], r.GetValue(heads) ?? DefaultHeads, r.GetValue(workers), r.GetValue(repeat), r.GetValue(causal), r.GetValue(maxShardBytes), ct)
            : r.GetValue(projection)
            ? ProjectionBench.Run(stdout, stderr, Given(r.GetValue(seqs), [8192]), Given(r.GetValue(dims), [1024]), r.GetValue(threads)!, r.GetValue(repeat))
            : r.GetValue(decode)
            ? await DecodeBench.RunAsync(
                stdout, stderr, r.GetValue(queryRows)!, Given(r.GetValue(seqs), [65536]), Given(r.GetValue(dims), [128]), r.GetValue(heads) ?? 32, r.GetValue(kvHeads) ?? 8, r.GetValue(threads)!,
                r.GetValue(repeat), r.GetValue(block), r.GetValue(checkRows), r.GetValue(path))
            : r.GetValue(pipeline)
            ? await PipelineBench.RunAsync(stdout, stderr, Given(r.GetValue(seqs), DefaultSeqs), Given(r.GetValue(dims), DefaultDims), r.GetValue(heads) ?? DefaultHeads, r.GetValue(workers), r.GetValue(repeat), r.GetValue(causal), r.GetValue(block), r.GetValue(maxShardBytes))
            : Run(
                stdout, stderr, Given(r.GetValue(seqs), DefaultSeqs), Given(r.GetValue(dims), DefaultDims), r.GetValue(heads) ?? DefaultHeads, r.GetValue(threads)!, r.GetValue(repeat),
                r.GetValue(causal), r.GetValue(block), r.GetValue(checkRows), r.GetValue(path));
        });
        return command;
    }

    /// <summary>
    /// What is wrong with the options every mode reads, naming the option and its value, or null.
    /// Each mode checks its own (--query-rows, heads per K/V head) itself.
    /// </summary>
    private static string? Wrong(int[]? seqs, int[]? dims, int? heads, int? kvHeads, int[] threads, int repeat, int block, int checkRows, int workers, long maxShardBytes)
        => seqs?.Any(n => n <= 0) == true ? $"--seq {string.Join(' ', seqs)}: every length must be positive"
            : dims?.Any(d => d <= 0) == true ? $"--dim {string.Join(' ', dims)}: every dim must be positive"
            : heads <= 0 ? $"--heads {heads} must be positive"
            : kvHeads <= 0 ? $"--kv-heads {kvHeads} must be positive"
            : threads.Any(t => t <= 0) ? $"--threads {string.Join(' ', threads)}: every thread count must be positive"
            : repeat < 1 ? $"--repeat {repeat} must be at least 1"
            : block < 16 || block > 4096 || block % 16 != 0 ? $"--block {block} must be a multiple of 16 between 16 and 4096"
            : checkRows < 1 ? $"--check-rows {checkRows} must be at least 1: every configuration is checked against the float64 reference before it is timed"
            : workers < 1 || workers > Pipeline.PipelineOptions.MaxWorkers ? $"--workers {workers} must be between 1 and {Pipeline.PipelineOptions.MaxWorkers} on this {Environment.ProcessorCount}-core machine (16 per core, at least 64)"
            : maxShardBytes < 64 << 10 ? $"--max-shard-bytes {maxShardBytes} must be at least 65536 (64 KiB)"
            : null;

    /// <summary>An unset list option reads as empty: its default then depends on the mode.</summary>
    private static int[] Given(int[]? values, int[] otherwise) => values is { Length: > 0 } ? values : otherwise;

    private static int Run(TextWriter stdout, TextWriter stderr, int[] seqs, int[] dims, int heads, int[] threadCounts, int repeat, bool causal, int block, int checkRows, KernelPath path)
    {
        stdout.WriteLine($"kernel path {Lanes.Resolve(path)}, {MachineInfo.Cpu()}, {Environment.ProcessorCount} cores, block {block}, median of {repeat}; of peak: of the FMA peak measured here on as many threads");
        stdout.WriteLine();
        stdout.WriteLine("| N | d | H | threads | dense s | GFLOP/s | of peak | causal s | causal/dense | peak WS MiB | Q+K+V+O MiB | max err/tol |");
        stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        bool allPassed = true;
        foreach (int n in seqs)
        {
            foreach (int d in dims)
            {
                var q = PipelineBench.Random("Q", 1, heads, n, d);
                var k = PipelineBench.Random("K", 2, heads, n, d);
                var v = PipelineBench.Random("V", 3, heads, n, d);
                var dense = new AttentionOptions { BlockSize = block };
                var masked = dense with { Causal = true };
                var denseProblem = AttentionProblem.Create(q, k, v, dense);
                var causalProblem = AttentionProblem.Create(q, k, v, masked);
                foreach (int t in threadCounts)
                {
                    var settings = new ComputeOptions { Threads = t, KernelPath = path };
                    double errDense = Check(denseProblem, settings, checkRows);
                    double errCausal = causal ? Check(causalProblem, settings, checkRows) : 0;
                    double worst = Math.Max(errDense, errCausal);
                    allPassed &= worst <= 1;
                    double denseTime = Median(denseProblem, settings, repeat);
                    double causalTime = causal ? Median(causalProblem, settings, repeat) : double.NaN;
                    double gflops = denseProblem.DenseFlops / denseTime / 1e9;
                    double ioMiB = 4.0 * q.Length * 4 / (1 << 20);
                    using var self = Process.GetCurrentProcess();
                    self.Refresh();
                    stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {n} | {d} | {heads} | {t} | {denseTime:F3} | {gflops:F1} | {gflops / MachineInfo.FmaPeakGflops(t):P0} | {(causal ? causalTime.ToString("F3", CultureInfo.InvariantCulture) : "–")} | {(causal ? (causalTime / denseTime).ToString("F2", CultureInfo.InvariantCulture) : "–")} | {self.PeakWorkingSet64 / (1 << 20)} | {ioMiB:F0} | {worst:F3} |"));
                }
            }
        }

        if (!allPassed)
        {
            stderr.WriteLine("bench: a configuration fell outside the accuracy contract (max err/tol > 1)");
            return 1;
        }

        return 0;
    }

    /// <summary>Median of at least <paramref name="repeat"/> runs, and of enough runs to fill about a second.</summary>
    private static double Median(AttentionProblem problem, ComputeOptions settings, int repeat)
    {
        var times = new List<double>();
        double total = 0;
        while (times.Count < repeat || (total < 1.0 && times.Count < 200))
        {
            var sw = Stopwatch.StartNew();
            Attention.Compute(problem, settings);
            times.Add(sw.Elapsed.TotalSeconds);
            total += times[^1];
        }

        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Worst |out − ref| / (2e-6 + 1e-5·|ref|) over sampled rows; ≤ 1 is within the contract.</summary>
    private static double Check(AttentionProblem p, ComputeOptions settings, int rows)
        => ReferenceCheck.Compare(p, Attention.Compute(p, settings), ReferenceCheck.Rows(p, rows, fullFlops: 0)).WorstRatio;
}
