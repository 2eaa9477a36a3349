using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench --decode</c>: a few query rows against a long cache of keys and values, the
/// step a long-context model repeats for every generated token. That step reads each key and value
/// once and does little arithmetic per byte, so its ceiling is the memory bandwidth, which this
/// measures first on the same threads; the table reports K/V bytes read per second against it.
/// </summary>
internal static class DecodeBench
{
    public static int Run(int[] queryRows, int[] keySeqs, int[] dims, int heads, int kvHeads, int[] threadCounts, int repeat, int block, int checkRows, KernelPath path)
    {
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new UsageException($"--heads {heads} must be a positive multiple of --kv-heads {kvHeads}");
        }

        Console.WriteLine($"kernel path {Lanes.Resolve(path)}, {Environment.ProcessorCount} cores, block {block}, median of {repeat}");
        var bandwidth = new Dictionary<int, double>();
        foreach (int t in threadCounts.Distinct())
        {
            bandwidth[t] = MemoryBandwidth.Measure(1L << 30, t);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"memory read bandwidth, {t} thread(s): {bandwidth[t] / 1e9:F1} GB/s (1 GiB buffer, median of 7 passes)"));
        }

        Console.WriteLine();
        Console.WriteLine("| Nq | Nk | H | H_kv | d | threads | s | GFLOP/s | K/V GB/s | of bandwidth | max err/tol |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        bool allPassed = true;
        foreach (int nk in keySeqs)
        {
            foreach (int d in dims)
            {
                var k = PipelineBench.Random("K", 2, kvHeads, nk, d);
                var v = PipelineBench.Random("V", 3, kvHeads, nk, d);
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
                        double time = BenchCommand.Median(problem, settings, repeat);
                        double gbs = kvBytes / time;
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"| {nq} | {nk} | {heads} | {kvHeads} | {d} | {t} | {time:F4} | {problem.DenseFlops / time / 1e9:F1} | {gbs / 1e9:F1} | {gbs / bandwidth[t]:P0} | {check.WorstRatio:F3} |"));
                    }
                }
            }
        }

        if (!allPassed)
        {
            Console.Error.WriteLine("bench: a configuration fell outside the accuracy contract (max err/tol > 1)");
            return 1;
        }

        return 0;
    }
}
