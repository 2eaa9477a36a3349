using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench --decode</c>: a few query rows against a long cache of keys and values, the
/// step a long-context model repeats for every generated token. That step reads each key and value
/// once and does little arithmetic per byte, so its ceiling is the memory bandwidth. The machines
/// are shared and their bandwidth drifts, so each timed step alternates with a read of a 1 GiB
/// buffer on the same threads, and the table reports the medians of both and of their ratios. K, V
/// and that buffer are allocated as <see cref="AttentionTensor.Zeros"/> allocates, on 2 MiB pages
/// where Linux offers them, as a key/value cache kept across steps should be. Each step runs twice:
/// against K and V as <c>[B, H_kv, N, d]</c> tensors, and against the same keys and values in a
/// <see cref="KeyValueCache"/> (the layout a decoding loop keeps), whose output must have the same bits.
/// </summary>
internal static class DecodeBench
{
    public static int Run(TextWriter stdout, TextWriter stderr, int[] queryRows, int[] keySeqs, int[] dims, int heads, int kvHeads, int[] threadCounts, int repeat, int block, int checkRows, KernelPath path)
    {
        string? wrong = heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 ? $"--heads {heads} must be a positive multiple of --kv-heads {kvHeads}"
            : queryRows.Any(n => n <= 0) ? $"--query-rows {string.Join(' ', queryRows)}: every count must be positive"
            : null;
        if (wrong is not null)
        {
            stderr.WriteLine($"bench: {wrong}");
            return 2;
        }

        stdout.WriteLine($"kernel path {Lanes.Resolve(path)}, {MachineInfo.Cpu()}, {Environment.ProcessorCount} cores, block {block}, median of {Math.Max(repeat, 5)} alternating runs; K, V and the memory probe on 2 MiB pages where offered; K/V from: [B, H_kv, N, d] tensors, or a KeyValueCache holding the same keys (same bits, checked); of peak: of the FMA peak measured here on as many threads; memory: a 1 GiB read on as many threads before each run");
        stdout.WriteLine();
        stdout.WriteLine("| Nq | Nk | H | H_kv | d | threads | K/V from | s | GFLOP/s | of peak | K/V GB/s | memory GB/s | K/V of memory | max err/tol |");
        stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        var probe = new MemoryBandwidth(1L << 30);
        bool allPassed = true;
        foreach (int nk in keySeqs)
        {
            foreach (int d in dims)
            {
                var k = PipelineBench.RandomOnHugePages("K", 2, kvHeads, nk, d);
                var v = PipelineBench.RandomOnHugePages("V", 3, kvHeads, nk, d);
                double kvBytes = 2.0 * k.Length * sizeof(float);
                var cache = new KeyValueCache(1, kvHeads, d, d, block);
                cache.Append(k, v);
                foreach (int nq in queryRows)
                {
                    var q = PipelineBench.Random("Q", 1, heads, nq, d);
                    var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = block });
                    foreach (int t in threadCounts)
                    {
                        var settings = new ComputeOptions { Threads = t, KernelPath = path };
                        var rows = ReferenceCheck.Rows(problem, checkRows, fullFlops: 0);
                        var fromTensors = Attention.Compute(problem, settings);
                        var fromCache = Attention.Compute(q, cache, problem.Options, settings);
                        if (!fromTensors.Output.Data.Span.SequenceEqual(fromCache.Output.Data.Span) || !fromTensors.Lse.AsSpan().SequenceEqual(fromCache.Lse))
                        {
                            stderr.WriteLine($"bench: Nq {nq}, Nk {nk}, d {d}, {t} threads: the step against the key/value cache did not give the bits of the step against K and V");
                            return 1;
                        }

                        var checks = new[] { ReferenceCheck.Compare(problem, fromTensors, rows), ReferenceCheck.Compare(problem, fromCache, rows) };
                        allPassed &= checks.All(c => c.Inside);
                        var times = new[] { new List<double>(), new List<double>() };
                        var memory = new[] { new List<double>(), new List<double>() };
                        var ratios = new[] { new List<double>(), new List<double>() };
                        for (int run = 0; run < Math.Max(repeat, 5); run++)
                        {
                            for (int layout = 0; layout < 2; layout++)
                            {
                                memory[layout].Add(probe.Pass(t));
                                var sw = Stopwatch.StartNew();
                                _ = layout == 0 ? Attention.Compute(problem, settings) : Attention.Compute(q, cache, problem.Options, settings);
                                times[layout].Add(sw.Elapsed.TotalSeconds);
                                ratios[layout].Add(kvBytes / times[layout][^1] / memory[layout][^1]);
                            }
                        }

                        for (int layout = 0; layout < 2; layout++)
                        {
                            double time = PipelineBench.Median(times[layout]);
                            double gflops = problem.DenseFlops / time / 1e9;
                            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                                $"| {nq} | {nk} | {heads} | {kvHeads} | {d} | {t} | {(layout == 0 ? "tensors" : "cache")} | {time:F4} | {gflops:F1} | {gflops / MachineInfo.FmaPeakGflops(t):P0} | {kvBytes / time / 1e9:F1} | {PipelineBench.Median(memory[layout]) / 1e9:F1} | {PipelineBench.Median(ratios[layout]):P0} | {checks[layout].WorstRatio:F3} |"));
                        }
                    }
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
}
