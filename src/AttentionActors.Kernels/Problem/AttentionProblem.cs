namespace AttentionActors.Kernels;

/// <summary>
/// Q, K, V and options, checked once: shapes, head ratio, every parameter, every value finite and
/// small enough that no score or sum can overflow float32. Workers, the reducer and the single-node
/// path all compute from a problem, so all of them agree on shapes, blocks and masks.
/// </summary>
public sealed class AttentionProblem
{
    /// <summary>Largest logit magnitude accepted (scores, soft-cap and ALiBi together); s − m stays finite.</summary>
    public const double MaxLogit = 1e30;

    /// <summary>Largest magnitude any sum (q·k, Σ p·v) may reach; float32 overflows at 3.4e38.</summary>
    public const double MaxSum = 1e37;

    private const float CosineNormFloor = 1e-8f;

    private AttentionProblem(AttentionGeometry geometry, AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionMask? mask)
    {
        Geometry = geometry;
        Q = q;
        K = k;
        V = v;
        Mask = mask;
    }

    /// <summary>Shapes, options and masks: everything but the tensors.</summary>
    public AttentionGeometry Geometry { get; }

    public AttentionTensor Q { get; }

    public AttentionTensor K { get; }

    public AttentionTensor V { get; }

    /// <summary>The explicit mask (the whole mask, or a shard's window of it), when <see cref="AttentionGeometry.Mask"/> is set.</summary>
    public AttentionMask? Mask { get; }

    /// <summary>
    /// A decoding step's keys and values when they come from a <see cref="KeyValueCache"/>
    /// (<see cref="KeyValueCache.StepProblem"/>): K and V are then windows of no rows and the kernel
    /// reads the cache's blocks instead. Only the split-KV path and shard partials read a cache.
    /// </summary>
    internal KeyValueCache? Cache { get; private init; }

    public AttentionOptions Options => Geometry.Options;

    public int Batch => Geometry.Batch;

    public int Heads => Geometry.Heads;

    public int KvHeads => Geometry.KvHeads;

    /// <summary>Query heads per key/value head (1: MHA, H: MQA).</summary>
    public int GroupSize => Geometry.GroupSize;

    public int QuerySeq => Geometry.QuerySeq;

    public int KeySeq => Geometry.KeySeq;

    public int KeyDim => Geometry.KeyDim;

    public int ValueDim => Geometry.ValueDim;

    /// <inheritdoc cref="AttentionGeometry.PartialWidth"/>
    public int PartialWidth => Geometry.PartialWidth;

    public int BlockSize => Geometry.BlockSize;

    /// <summary>⌈Nk / BlockSize⌉ canonical key blocks.</summary>
    public int BlockCount => Geometry.BlockCount;

    /// <summary>The factor applied to the raw accumulated score (dot scale, 1/τ, −1/(2σ²), or 1).</summary>
    public float Scale => Geometry.Scale;

    /// <summary>Added to a query index to find its diagonal key (Nk − Nq when bottom-right aligned).</summary>
    public long DiagonalOffset => Geometry.DiagonalOffset;

    /// <summary>FLOPs of the non-causal problem: 4·Nq·Nk·d per head (d the mean of d_k and d_v).</summary>
    public double DenseFlops => Geometry.DenseFlops;

    /// <summary>Validates everything and builds the problem, or throws <see cref="AttentionInputException"/>.</summary>
    public static AttentionProblem Create(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null)
        => Create(q, k, v, options, null);

    /// <summary>Validates everything and builds the problem with an explicit <paramref name="mask"/> (null: none), or throws <see cref="AttentionInputException"/>.</summary>
    public static AttentionProblem Create(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options, AttentionMask? mask)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        var geometry = AttentionGeometry.Create(q.ShapeInfo, k.ShapeInfo, v.ShapeInfo, options).WithMask(mask?.Shape);
        return Create(geometry, q, k, v, mask);
    }

    /// <summary>
    /// Builds the problem of a known geometry from tensors that may be windows of the full ones (a
    /// shard's rows and blocks): their shapes must be the geometry's, and every value they hold is checked.
    /// </summary>
    public static AttentionProblem Create(AttentionGeometry geometry, AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionMask? mask = null)
        => Create(geometry, q, k, v, mask, checkValues: true);

    /// <summary>
    /// As <see cref="Create(AttentionGeometry, AttentionTensor, AttentionTensor, AttentionTensor, AttentionMask?)"/>;
    /// without <paramref name="checkValues"/> the values are not scanned again, for windows of a
    /// problem this process has already checked (<see cref="ShardInput.ValuesChecked"/>) or its
    /// buffers seen in another shape (<see cref="KeyGroupStacking.TryStack"/>).
    /// </summary>
    internal static AttentionProblem Create(AttentionGeometry geometry, AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionMask? mask, bool checkValues)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        foreach (var (tensor, shape) in new[] { (q, geometry.QueryShape), (k, geometry.KeyShape), (v, geometry.ValueShape) })
        {
            if (tensor.Batch != shape.Batch || tensor.Heads != shape.Heads || tensor.Seq != shape.Seq || tensor.Dim != shape.Dim)
            {
                throw new AttentionInputException($"{tensor} does not have the shape {shape} of the job");
            }
        }

        if (geometry.Mask != mask?.Shape || (mask is not null && (mask.QuerySeq != geometry.QuerySeq || mask.KeySeq != geometry.KeySeq)))
        {
            throw new AttentionInputException(mask is null
                ? $"the job has a {geometry.Mask} but no mask values arrived"
                : $"{mask} does not fit the job ({geometry})");
        }

        if (mask is { IsWindow: true } && (!q.IsWindow || mask.RowStart > q.SeqStart || mask.RowStart + mask.RowCount < q.SeqStart + q.SeqCount
            || mask.KeyStart > k.SeqStart || mask.KeyStart + mask.KeyCount < k.SeqStart + k.SeqCount))
        {
            throw new AttentionInputException($"{mask} does not hold the rows and keys of {q} and {k}");
        }

        var problem = new AttentionProblem(geometry, q, k, v, mask);
        if (checkValues)
        {
            ProblemValidator.CheckValues(problem);
        }

        return problem;
    }

    /// <summary>This problem with its keys and values read from <paramref name="cache"/> (null: from K and V).</summary>
    internal AttentionProblem WithCache(KeyValueCache? cache) => cache is null && Cache is null ? this : new(Geometry, Q, K, V, Mask) { Cache = cache };

    /// <inheritdoc cref="AttentionGeometry.VisibleKeys"/>
    public (int Lo, int Hi) VisibleKeys(int b, int i) => Geometry.VisibleKeys(b, i);

    /// <inheritdoc cref="AttentionGeometry.VisibleBlocks(int, int, int)"/>
    public (int First, int End) VisibleBlocks(int b, int rowStart, int rowCount) => Geometry.VisibleBlocks(b, rowStart, rowCount);

    /// <inheritdoc cref="AttentionGeometry.VisiblePairs"/>
    public long VisiblePairs(int b, int rowStart, int rowCount, int blockStart, int blockEnd) => Geometry.VisiblePairs(b, rowStart, rowCount, blockStart, blockEnd);

    internal static float CosineInverseNorm(ReadOnlySpan<float> x)
    {
        double sum = 0;
        foreach (float value in x)
        {
            sum += (double)value * value;
        }

        return (float)(1.0 / Math.Max(Math.Sqrt(sum), CosineNormFloor));
    }
}
