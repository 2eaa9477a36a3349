using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline;

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
/// <see cref="KeyValueCache"/> (the layout a decoding loop keeps), whose output must have the same bits;
/// and both again on the embedded pipeline with as many workers as threads, as a program that
/// decodes through the actors runs it (same bits again).
/// </summary>
internal static class DecodeBench
{
    public static async Task<int> RunAsync(TextWriter stdout, TextWriter stderr, int[] queryRows, int[] keySeqs, int[] dims, int heads, int kvHeads, int[] threadCounts, int repeat, int block, int checkRows, KernelPath path)
    {
        string? wrong = heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 ? $"--heads {heads} must be a positive multiple of --kv-heads {kvHeads}"
            : queryRows.Any(n => n <= 0) ? $"--query-rows {string.Join(' ', queryRows)}: every count must be positive"
            : null;
        if (wrong is not null)
        {
            stderr.WriteLine($"bench: {wrong}");
            return 2;
        }

        stdout.WriteLine($"kernel path {Lanes.Resolve(path)}, {MachineInfo.Cpu()}, {Environment.ProcessorCount} cores, block {block}, median of {Math.Max(repeat, 5)} alternating runs; K, V and the memory probe on 2 MiB pages where offered; K/V from: [B, H_kv, N, d] tensors, or a KeyValueCache holding the same keys; on: the kernel alone, or the embedded pipeline with a worker per thread (every row's bits the same, checked); of peak: of the FMA peak measured here on as many threads; memory: a 1 GiB read on as many threads before each run");
        stdout.WriteLine();
        stdout.WriteLine("| Nq | Nk | H | H_kv | d | threads | K/V from | on | s | GFLOP/s | of peak | K/V GB/s | memory GB/s | K/V of memory | max err/tol |");
        stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
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
                        await using var pipeline = EmbeddedPipeline.Start(new PipelineOptions { Workers = t, KernelPath = path });

                        // The four ways a step runs: K/V from tensors or the cache, on the kernel or the pipeline.
                        var ways = new (string From, string On, Func<Task<AttentionResult>> Step)[]
                        {
                            ("tensors", "kernel", () => Task.FromResult(Attention.Compute(problem, settings))),
                            ("cache", "kernel", () => Task.FromResult(Attention.Compute(q, cache, problem.Options, settings))),
                            ("tensors", "pipeline", () => pipeline.ComputeAsync(problem)),
                            ("cache", "pipeline", () => pipeline.ComputeAsync(q, cache, problem.Options)),
                        };
                        var rows = ReferenceCheck.Rows(problem, checkRows, fullFlops: 0);
                        AttentionResult? first = null;
                        var checks = new List<ReferenceCheck.Outcome>();
                        foreach (var way in ways)
                        {
                            var result = await way.Step();
                            first ??= result;
                            if (!first.Output.Data.Span.SequenceEqual(result.Output.Data.Span) || !first.Lse.AsSpan().SequenceEqual(result.Lse))
                            {
                                stderr.WriteLine($"bench: Nq {nq}, Nk {nk}, d {d}, {t} threads: the step from {way.From} on the {way.On} did not give the bits of the step from tensors on the kernel");
                                return 1;
                            }

                            checks.Add(ReferenceCheck.Compare(problem, result, rows));
                        }

                        allPassed &= checks.All(c => c.Inside);
                        var times = ways.Select(_ => new List<double>()).ToArray();
                        var memory = ways.Select(_ => new List<double>()).ToArray();
                        var ratios = ways.Select(_ => new List<double>()).ToArray();
                        for (int run = 0; run < Math.Max(repeat, 5); run++)
                        {
                            for (int w = 0; w < ways.Length; w++)
                            {
                                memory[w].Add(probe.Pass(t));
                                var sw = Stopwatch.StartNew();
                                _ = await ways[w].Step();
                                times[w].Add(sw.Elapsed.TotalSeconds);
                                ratios[w].Add(kvBytes / times[w][^1] / memory[w][^1]);
                            }
                        }

                        for (int w = 0; w < ways.Length; w++)
                        {
                            double time = PipelineBench.Median(times[w]);
                            double gflops = problem.DenseFlops / time / 1e9;
                            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                                $"| {nq} | {nk} | {heads} | {kvHeads} | {d} | {t} | {ways[w].From} | {ways[w].On} | {time:F4} | {gflops:F1} | {gflops / MachineInfo.FmaPeakGflops(t):P0} | {kvBytes / time / 1e9:F1} | {PipelineBench.Median(memory[w]) / 1e9:F1} | {PipelineBench.Median(ratios[w]):P0} | {checks[w].WorstRatio:F3} |"));
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
