namespace AttentionActors.Kernels;

/// <summary>
/// Which rows of a layer job a projection holds: <see cref="Part"/> 'q' for query rows
/// [Start, Start + Count) of head <see cref="Head"/>, 'k' or 'v' for key block <see cref="Start"/>
/// of key head <see cref="Head"/> (Count 1), in batch <see cref="Batch"/>.
/// </summary>
public readonly record struct ProjectionKey(char Part, int Batch, int Head, int Start, int Count);

/// <summary>
/// Projections of one layer job's rows that shards share (<see cref="ShardInput.Projected"/>): every
/// shard of a head needs its key blocks projected, and one projection serves all of them. The same
/// rows projected with the same weights give the same bits, so a cached copy never changes a result.
/// </summary>
public interface IProjectionCache
{
    /// <summary>The projection held for <paramref name="key"/>, or <paramref name="project"/>'s result, kept when there is room.</summary>
    float[] GetOrAdd(ProjectionKey key, Func<float[]> project);
}
