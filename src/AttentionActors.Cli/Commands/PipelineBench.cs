using System.Diagnostics;
using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention bench --pipeline</c>: the embedded pipeline against the single-node kernel on the
/// same inputs, in one process, runs alternating (single, pipeline, single, …) after a warm-up of
/// each, every pipeline result checked bit for bit against the single-node one. Reports medians and
/// their ratio; time includes planning and the whole job on an already started pipeline.
/// </summary>
internal static class PipelineBench
{
    public static async Task<int> RunAsync(TextWriter stdout, TextWriter stderr, int[] seqs, int[] dims, int heads, int workers, int repeat, bool causal, int block, long maxShardBytes)
    {
        stdout.WriteLine($"{Environment.ProcessorCount} cores, {workers} workers vs {workers} threads, block {block}, shard budget {maxShardBytes >> 10} KiB, {repeat} alternating runs each");
        stdout.WriteLine();
        stdout.WriteLine("| N | d | H | mask | shards | single-node GFLOP/s (median) | pipeline GFLOP/s (median) | pipeline/single | bits equal |");
        stdout.WriteLine("|---:|---:|---:|---|---:|---:|---:|---:|---|");
        var cluster = new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = maxShardBytes } };
        await using var embedded = EmbeddedPipeline.Start(cluster);
        bool allEqual = true;
        foreach (int n in seqs)
        {
            foreach (int d in dims)
            {
                var q = Random("Q", 1, heads, n, d);
                var k = Random("K", 2, heads, n, d);
                var v = Random("V", 3, heads, n, d);
                var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = block, Causal = causal });
                var settings = new ComputeOptions { Threads = workers };
                double flops = problem.Geometry.VisibleFlops();
                var single = Attention.Compute(problem, settings);
                var warm = await embedded.ComputeAsync(problem);
                bool equal = Same(single, warm);
                var singleTimes = new List<double>();
                var pipelineTimes = new List<double>();
                int shards = 0;
                for (int r = 0; r < repeat; r++)
                {
                    var clock = Stopwatch.StartNew();
                    Attention.Compute(problem, settings);
                    singleTimes.Add(clock.Elapsed.TotalSeconds);

                    // The pipeline's own plan, as a user's job gets it (the one a dry run shows).
                    clock.Restart();
                    var result = await embedded.ComputeAsync(problem);
                    pipelineTimes.Add(clock.Elapsed.TotalSeconds);
                    shards = EmbeddedPipeline.Plan(KeyGroupStacking.Stack(problem.Geometry) ?? problem.Geometry, fromCache: false, cluster).Shards.Count;
                    equal &= Same(single, result);
                }

                allEqual &= equal;
                double s = flops / Median(singleTimes) / 1e9;
                double p = flops / Median(pipelineTimes) / 1e9;
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {n} | {d} | {heads} | {(causal ? "causal" : "dense")} | {shards} | {s:F1} | {p:F1} | {p / s:F3} | {(equal ? "yes" : "NO")} |"));
            }
        }

        if (!allEqual)
        {
            stderr.WriteLine("bench: the pipeline's output differed from single-node");
            return 1;
        }

        return 0;
    }

    /// <summary>Whether two results are the same bits (output and lse).</summary>
    internal static bool Same(AttentionResult a, AttentionResult b)
        => a.Output.Data.Span.SequenceEqual(b.Output.Data.Span) && a.Lse.AsSpan().SequenceEqual(b.Lse);

    /// <summary>The median of timed runs (the mean of the middle two for an even count).</summary>
    internal static double Median(List<double> times)
    {
        var sorted = times.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    internal static AttentionTensor Random(string name, int seed, int heads, int n, int d)
        => Fill(AttentionTensor.FromArray(name, new float[heads * n * d], 1, heads, n, d), seed);

    /// <summary>
    /// As <see cref="Random(string, int, int, int, int)"/>, in a tensor allocated by
    /// <see cref="AttentionTensor.Zeros"/>: large ones on 2 MiB pages where Linux offers them, as a
    /// key/value cache kept across decoding steps should be.
    /// </summary>
    internal static AttentionTensor RandomOnHugePages(string name, int seed, int heads, int n, int d)
        => Fill(AttentionTensor.Zeros(name, 1, heads, n, d), seed);

    private static AttentionTensor Fill(AttentionTensor tensor, int seed)
    {
        UniformFill.Fill(tensor.Data, seed, 0, 1.7f);
        return tensor;
    }
}
