using AttentionActors.Kernels.Tiles;

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
        options ??= new AttentionOptions { BlockSize = cache.BlockSize };
        if (options.BlockSize != cache.BlockSize)
        {
            throw new AttentionInputException($"the key/value cache holds blocks of {cache.BlockSize} keys but the options ask for blocks of {options.BlockSize} (the bits depend on it); use the cache's block size");
        }

        if (options.Score is not (ScoreFunction.Dot or ScoreFunction.Gaussian))
        {
            throw new AttentionInputException($"a key/value cache holds the keys as appended, which the {options.Score} score does not read (it scores normalised or projected keys); compute it with Attention.Compute on K and V tensors");
        }

        if (q.IsWindow || q.IsSegmented)
        {
            throw new AttentionInputException($"{q}: a step against a key/value cache takes a whole Q tensor");
        }

        if (q.Seq > PanelKernelShape.PanelRows)
        {
            throw new AttentionInputException($"{q} has {q.Seq} query rows per head; a step against a key/value cache takes at most {PanelKernelShape.PanelRows} (compute longer queries with Attention.Compute on K and V tensors)");
        }

        lock (cache.Gate)
        {
            if (cache.Length == 0)
            {
                throw new AttentionInputException("the key/value cache holds no keys yet; append some before computing against it");
            }

            var keys = new TensorShape("K", cache.Batch, cache.KvHeads, cache.Length, cache.KeyDim);
            var values = new TensorShape("V", cache.Batch, cache.KvHeads, cache.Length, cache.ValueDim);
            var geometry = AttentionGeometry.Create(q.ShapeInfo, keys, values, options);

            // The problem's K and V hold no rows: the kernel reads the cache, and the cache checked
            // every key and value as it was appended and keeps the bounds the checks below need.
            var problem = AttentionProblem.Create(geometry, q, AttentionTensor.Window(keys, Memory<float>.Empty, 0, 0, 0, 0), AttentionTensor.Window(values, Memory<float>.Empty, 0, 0, 0, 0), null, checkValues: false);
            double qNorm = ProblemValidator.MaxRowNorm(q, out _);
            ProblemValidator.CheckBounds(problem, qNorm, cache.MaxKeyNorm, cache.MaxValueAbs);
            return ComputeSplitKeys(problem, settings ?? new ComputeOptions(), null, null, cancellationToken, cache);
        }
    }
}
