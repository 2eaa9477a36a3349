using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Pipeline;

/// <summary>
/// Jobs computed on the kernel library directly, on this process's threads: no actors, no shards,
/// the same bits as <see cref="EmbeddedPipeline"/> and a cluster. The third way a command runs a
/// job (<c>--single-node</c>), behind the same front door.
/// </summary>
public sealed class SingleNodeRunner(int threads, KernelPath path = KernelPath.Auto) : IAttentionRunner
{
    private readonly ComputeOptions settings = new() { Threads = threads, KernelPath = path };

    public string Where => $"a single node ({threads} thread{(threads == 1 ? "" : "s")})";

    public Task<AttentionResult> ComputeAsync(AttentionProblem problem, AttentionTensor? output = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var target = output is { } given ? JobOutputs.Attention(problem.Geometry, given) : null;
        if (new[] { problem.Q, problem.K, problem.V, target }.FirstOrDefault(t => t is { IsSegmented: true }) is { } segmented)
        {
            throw new AttentionInputException($"{segmented} holds {segmented.Length:N0} values in segments; a single node computes whole tensors of at most {Array.MaxLength:N0} values: run the job on the embedded pipeline or a cluster, which read it row range by row range");
        }

        return Task.Run(
            () =>
            {
                // Straight into the caller's output (a memory-mapped file, say), not a copy of it.
                return target is null ? Attention.Compute(problem, settings, null, cancellationToken) : Attention.ComputeInto(problem, target, settings, null, cancellationToken);
            },
            cancellationToken);
    }

    public Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        return Task.Run(
            () =>
            {
                var (q, k, v) = MultiHeadLayer.Project(problem.Weights, g.Batch, problem.X, g.QuerySeq, problem.KeyInput, problem.ValueInput, g.KeySeq, threads, cancellationToken);
                return Attention.Compute(AttentionProblem.Create(q, k, v, g.Options), settings, null, cancellationToken);
            },
            cancellationToken);
    }

    public Task<float[]> CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        JobOutputs.CheckLse(problem.Geometry, lse);
        return Task.Run(() => Inspection.Coverage(problem, lse.Span, settings, cancellationToken), cancellationToken);
    }

    public Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        problem.Geometry.ForWeights(window);
        JobOutputs.CheckLse(problem.Geometry, lse);
        return Task.Run(() => Inspection.Weights(problem, lse.Span, window.Batch, window.Head, (window.RowLo, window.RowHi), (window.ColLo, window.ColHi), window.CellRows, window.CellCols, window.Pooling, path, threads, cancellationToken), cancellationToken);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
