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

    private AttentionProblem(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions options)
    {
        Q = q;
        K = k;
        V = v;
        Options = options;
        GroupSize = q.Heads / k.Heads;
        BlockSize = options.BlockSize;
        BlockCount = (k.Seq + BlockSize - 1) / BlockSize;
        Scale = options.Score switch
        {
            ScoreFunction.Dot => options.Scale ?? (float)(1.0 / Math.Sqrt(q.Dim)),
            ScoreFunction.Cosine => 1f / options.Temperature,
            ScoreFunction.Gaussian => (float)(-1.0 / (2.0 * options.Sigma * options.Sigma)),
            _ => 1f,
        };
        DiagonalOffset = options.Alignment == DiagonalAlignment.BottomRight ? k.Seq - q.Seq : 0;
    }

    public AttentionTensor Q { get; }

    public AttentionTensor K { get; }

    public AttentionTensor V { get; }

    public AttentionOptions Options { get; }

    public int Batch => Q.Batch;

    public int Heads => Q.Heads;

    public int KvHeads => K.Heads;

    /// <summary>Query heads per key/value head (1: MHA, H: MQA).</summary>
    public int GroupSize { get; }

    public int QuerySeq => Q.Seq;

    public int KeySeq => K.Seq;

    public int KeyDim => Q.Dim;

    public int ValueDim => V.Dim;

    public int BlockSize { get; }

    /// <summary>⌈Nk / BlockSize⌉ canonical key blocks.</summary>
    public int BlockCount { get; }

    /// <summary>The factor applied to the raw accumulated score (dot scale, 1/τ, −1/(2σ²), or 1).</summary>
    public float Scale { get; }

    /// <summary>Added to a query index to find its diagonal key (Nk − Nq when bottom-right aligned).</summary>
    public long DiagonalOffset { get; }

    /// <summary>FLOPs of the non-causal problem: 4·Nq·Nk·d per head (d the mean of d_k and d_v).</summary>
    public double DenseFlops => 2.0 * Batch * Heads * QuerySeq * (double)KeySeq * (KeyDim + ValueDim);

    /// <summary>Validates everything and builds the problem, or throws <see cref="AttentionInputException"/>.</summary>
    public static AttentionProblem Create(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        options ??= new AttentionOptions();
        ProblemValidator.CheckShapes(q, k, v);
        ProblemValidator.CheckOptions(q, k, options);
        var problem = new AttentionProblem(q, k, v, options);
        ProblemValidator.CheckValues(problem);
        return problem;
    }

    /// <summary>
    /// The keys query <paramref name="i"/> of batch <paramref name="b"/> sees: the interval
    /// [lo, hi) that the causal, window and padding masks leave (empty when lo ≥ hi).
    /// </summary>
    public (int Lo, int Hi) VisibleKeys(int b, int i)
    {
        long lo = 0;
        long hi = Options.KeyLengths?[b] ?? KeySeq;
        long diagonal = i + DiagonalOffset;
        if (Options.Causal)
        {
            hi = Math.Min(hi, diagonal + 1);
        }

        if (Options.Window is { } window)
        {
            if (window.Left >= 0)
            {
                lo = Math.Max(lo, diagonal - window.Left);
            }

            if (window.Right >= 0)
            {
                hi = Math.Min(hi, diagonal + window.Right + 1);
            }
        }

        lo = Math.Clamp(lo, 0, KeySeq);
        hi = Math.Clamp(hi, lo, KeySeq);
        return ((int)lo, (int)hi);
    }

    /// <summary>The blocks [first, end) that any of the rows [rowStart, rowStart + rowCount) sees at all.</summary>
    public (int First, int End) VisibleBlocks(int b, int rowStart, int rowCount)
    {
        long lo = long.MaxValue;
        long hi = long.MinValue;
        for (int i = rowStart; i < rowStart + rowCount; i++)
        {
            var (l, h) = VisibleKeys(b, i);
            if (h > l)
            {
                lo = Math.Min(lo, l);
                hi = Math.Max(hi, h);
            }
        }

        if (lo >= hi)
        {
            return (0, 0);
        }

        return ((int)(lo / BlockSize), (int)((hi + BlockSize - 1) / BlockSize));
    }

    /// <summary>Number of visible (query, key) pairs in rows [rowStart, rowStart + rowCount) of batch b, within blocks [blockStart, blockEnd).</summary>
    public long VisiblePairs(int b, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        long keyStart = (long)blockStart * BlockSize;
        long keyEnd = Math.Min((long)blockEnd * BlockSize, KeySeq);
        long total = 0;
        for (int i = rowStart; i < rowStart + rowCount; i++)
        {
            var (lo, hi) = VisibleKeys(b, i);
            total += Math.Max(0, Math.Min(hi, keyEnd) - Math.Max(lo, keyStart));
        }

        return total;
    }

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
