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
/// where Linux offers them, as a key/value cache kept across steps should be.
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

        stdout.WriteLine($"kernel path {Lanes.Resolve(path)}, {MachineInfo.Cpu()}, {Environment.ProcessorCount} cores, block {block}, median of {Math.Max(repeat, 5)} alternating runs; K, V and the memory probe on 2 MiB pages where offered; of peak: of the FMA peak measured here on as many threads; memory: a 1 GiB read on as many threads before each run");
        stdout.WriteLine();
        stdout.WriteLine("| Nq | Nk | H | H_kv | d | threads | s | GFLOP/s | of peak | K/V GB/s | memory GB/s | K/V of memory | max err/tol |");
        stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var probe = new MemoryBandwidth(1L << 30);
        bool allPassed = true;
        foreach (int nk in keySeqs)
        {
            foreach (int d in dims)
            {
                var k = PipelineBench.RandomOnHugePages("K", 2, kvHeads, nk, d);
                var v = PipelineBench.RandomOnHugePages("V", 3, kvHeads, nk, d);
                double kvBytes = 2.0 * k.Length * sizeof(float);
                foreach (int nq in queryRows)
                {
                    var q = PipelineBench.Random("Q", 1, heads, nq, d);
                    var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = block });
                    foreach (int t in threadCounts)
                    {
                        var settings = new ComputeOptions { Threads = t, KernelPath = path };
                        var check = ReferenceCheck.Compare(problem, Attention.Compute(problem, settings), ReferenceCheck.Rows(problem, checkRows, fullFlops: 0));
                        allPassed &= check.Inside;
                        var times = new List<double>();
                        var memory = new List<double>();
                        var ratios = new List<double>();
                        for (int run = 0; run < Math.Max(repeat, 5); run++)
                        {
                            memory.Add(probe.Pass(t));
                            var sw = Stopwatch.StartNew();
                            Attention.Compute(problem, settings);
                            times.Add(sw.Elapsed.TotalSeconds);
                            ratios.Add(kvBytes / times[^1] / memory[^1]);
                        }

                        double time = PipelineBench.Median(times);
                        double gflops = problem.DenseFlops / time / 1e9;
                        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"| {nq} | {nk} | {heads} | {kvHeads} | {d} | {t} | {time:F4} | {gflops:F1} | {gflops / MachineInfo.FmaPeakGflops(t):P0} | {kvBytes / time / 1e9:F1} | {PipelineBench.Median(memory) / 1e9:F1} | {PipelineBench.Median(ratios):P0} | {check.WorstRatio:F3} |"));
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
