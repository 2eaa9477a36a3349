using AttentionActors.Kernels;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Pipeline;

/// <summary>
/// The front door of every way a job runs: the embedded pipeline (<see cref="EmbeddedPipeline"/>)
/// and a cluster's client implement it alike, so a command states each job once. Every task
/// completes: with the result, or faulted with <see cref="AttentionJobException"/> naming the shard
/// or cause, or cancelled through the token.
/// </summary>
public interface IAttentionRunner : IAsyncDisposable
{
    /// <summary>Where the jobs run, for messages: "the embedded pipeline (3 workers)", "the cluster at host:port".</summary>
    string Where { get; }

    /// <summary>
    /// The attention of a validated problem: output <c>[B, H, Nq, Dv]</c> written into
    /// <paramref name="output"/> as rows finish (a memory-mapped file, say) or into a new array,
    /// and the log-sum-exp (and entropy when asked for).
    /// </summary>
    Task<AttentionResult> ComputeAsync(AttentionProblem problem, AttentionTensor? output = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// A multi-head layer's attention, <c>[B, H, N, E/H]</c> per head before the output projection,
    /// bit for bit <see cref="MultiHeadLayer.Project"/> followed by the attention: a cluster's workers
    /// project their shards' rows with their heads' weights; in one process the projections run first.
    /// </summary>
    Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>The coverage <c>[B, Hkv, Nk]</c> as a second pass once the attention's log-sum-exp is known; bit for bit <see cref="Inspection.Coverage"/>.</summary>
    Task<float[]> CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>A window of the weights pooled into cells <c>[CellRows, CellCols]</c>; bit for bit <see cref="Inspection.Weights"/>.</summary>
    Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default);
}
