namespace AttentionActors.Kernels;

/// <summary>Decoding steps against a <see cref="KeyValueCache"/>.</summary>
public static partial class Attention
{
    /// <summary>
    /// Attention of <paramref name="q"/> <c>[B, H, Nq, d_k]</c> (Nq ≤ 256 rows per head) against
    /// every key and value in <paramref name="cache"/>: the bits
    /// <see cref="Compute(AttentionTensor, AttentionTensor, AttentionTensor, AttentionOptions?, ComputeOptions?, CancellationToken)"/>
    /// gives for K and V tensors holding the cache's keys and values, so a causal mask aligned
    /// bottom-right places the rows at the last Nq positions. <paramref name="options"/> must use the
    /// cache's block size and a score that reads the keys as they are (dot product or Gaussian).
    /// </summary>
    public static AttentionResult Compute(AttentionTensor q, KeyValueCache cache, AttentionOptions? options = null, ComputeOptions? settings = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(cache);
        cache.Gate.Wait(cancellationToken);
        try
        {
            return ComputeSplitKeys(cache.StepProblem(q, options), settings ?? new ComputeOptions(), null, null, cancellationToken);
        }
        finally
        {
            cache.Gate.Release();
        }
    }
}
