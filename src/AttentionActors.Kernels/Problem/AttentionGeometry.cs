namespace AttentionActors.Kernels;

/// <summary>The name and shape <c>[batch, heads, seq, dim]</c> of a tensor, without its data.</summary>
public readonly record struct TensorShape(string Name, int Batch, int Heads, int Seq, int Dim)
{
    public long Length => (long)Batch * Heads * Seq * Dim;

    public override string ToString() => $"{Name}[{Batch}, {Heads}, {Seq}, {Dim}]";
}

/// <summary>What a job computes from its tensors.</summary>
public enum JobPass
{
    /// <summary>The attention output, its log-sum-exp (and entropy when asked for): partials merged per query row.</summary>
    Attention,

    /// <summary>
    /// The coverage c_j = Σ_h Σ_i e^(s_ij − lse_i) of every key, [B, Hkv, Nk], once the attention's
    /// lse is known: subtrees of the coverage tree merged per key (<see cref="Inspection.CoverageLeaves"/>).
    /// </summary>
    Coverage,

    /// <summary>
    /// A window of the weights a_ij = e^(s_ij − lse_i), pooled into cells (<see cref="AttentionGeometry.Weights"/>),
    /// once the attention's lse is known: each shard computes whole cells over every head in use.
    /// </summary>
    Weights,
}

/// <summary>
/// Everything about a job except its tensors: shapes, options, blocks, the diagonal offset and the
/// score scale, and which keys each query row sees. Small and serialisable: the coordinator, the
/// reducer and the planner work from this alone, and a worker receives it with its shard's data.
/// </summary>
public sealed class AttentionGeometry
{
    private AttentionGeometry(TensorShape q, TensorShape k, TensorShape v, AttentionOptions options)
    {
        QueryShape = q;
        KeyShape = k;
        ValueShape = v;
        Options = options;
        GroupSize = q.Heads / k.Heads;
        BlockSize = options.BlockSize;
        BlockCount = (int)(((long)k.Seq + BlockSize - 1) / BlockSize);
        Scale = options.Score switch
        {
            ScoreFunction.Dot => options.Scale ?? (float)(1.0 / Math.Sqrt(q.Dim)),
            ScoreFunction.Cosine => 1f / options.Temperature,
            ScoreFunction.Gaussian => (float)(-1.0 / (2.0 * options.Sigma * options.Sigma)),
            _ => 1f,
        };
    }

    public TensorShape QueryShape { get; }

    /// <summary>What the job computes; <see cref="JobPass.Attention"/> unless made by <see cref="ForPass"/>.</summary>
    public JobPass Pass { get; private init; }

    /// <summary>For a multi-head layer job (<see cref="WithLayer"/>): the inputs each worker projects into its head's Q, K and V; else null.</summary>
    public LayerShape? Layer { get; private init; }

    /// <summary>For a weights pass (<see cref="ForWeights"/>): the window and its cells; else null.</summary>
    public WeightsWindow? Weights { get; private init; }

    /// <summary>With an explicit mask (<see cref="WithMask"/>): its broadcast shape; else null.</summary>
    public MaskShape? Mask { get; private init; }

    public TensorShape KeyShape { get; }

    public TensorShape ValueShape { get; }

    public AttentionOptions Options { get; }

    public int Batch => QueryShape.Batch;

    public int Heads => QueryShape.Heads;

    public int KvHeads => KeyShape.Heads;

    /// <summary>Query heads per key/value head (1: MHA, H: MQA).</summary>
    public int GroupSize { get; }

    public int QuerySeq => QueryShape.Seq;

    public int KeySeq => KeyShape.Seq;

    public int KeyDim => QueryShape.Dim;

    public int ValueDim => ValueShape.Dim;

    /// <summary>Values per row of a partial's o: Dv, plus one for the entropy sum t when <see cref="AttentionOptions.Entropy"/>.</summary>
    public int PartialWidth => ValueShape.Dim + (Options.Entropy ? 1 : 0);

    public int BlockSize { get; }

    /// <summary>⌈Nk / BlockSize⌉ canonical key blocks.</summary>
    public int BlockCount { get; }

    /// <summary>The factor applied to the raw accumulated score (dot scale, 1/τ, −1/(2σ²), or 1).</summary>
    public float Scale { get; }

    /// <summary>
    /// Added to a query index to find its diagonal key: Nk − Nq when bottom-right aligned (Nk −
    /// <see cref="RowPeriod"/> for stacked heads), else 0.
    /// </summary>
    public long DiagonalOffset => Options.Alignment == DiagonalAlignment.BottomRight ? (long)KeySeq - (RowPeriod > 0 ? RowPeriod : QuerySeq) : 0;

    /// <summary>
    /// Query rows per stacked query head (<see cref="KeyGroupStacking"/>, <see cref="WithRowPeriod"/>):
    /// row i's causal and window diagonal is that of row i mod RowPeriod, as it is row i mod
    /// RowPeriod of its own head. 0: rows are their own positions.
    /// </summary>
    public int RowPeriod { get; private init; }

    /// <summary>FLOPs of the non-causal problem: 4·Nq·Nk·d per head (d the mean of d_k and d_v).</summary>
    public double DenseFlops => 2.0 * Batch * Heads * QuerySeq * (double)KeySeq * (KeyDim + ValueDim);

    /// <summary>Validates shapes and options (not values) and builds the geometry, or throws <see cref="AttentionInputException"/>.</summary>
    public static AttentionGeometry Create(TensorShape q, TensorShape k, TensorShape v, AttentionOptions? options = null)
    {
        options ??= new AttentionOptions();
        ProblemValidator.CheckShapes(q, k, v);
        ProblemValidator.CheckOptions(q, k, options);
        return new AttentionGeometry(q, k, v, options);
    }

    /// <summary>The same problem, computing <paramref name="pass"/>.</summary>
    public AttentionGeometry ForPass(JobPass pass)
        => pass == Pass ? this : pass == JobPass.Weights
            ? throw new ArgumentException("a weights pass needs its window: use ForWeights", nameof(pass))
            : RowPeriod > 0 ? throw new AttentionInputException($"a {pass} pass runs on the heads as they are, not stacked ({this})")
            : new AttentionGeometry(QueryShape, KeyShape, ValueShape, Options) { Pass = pass, Layer = Layer, Mask = Mask, RowPeriod = RowPeriod };

    /// <summary>The weights pass over <paramref name="window"/> of this problem, or throws <see cref="AttentionInputException"/> naming what does not fit.</summary>
    public AttentionGeometry ForWeights(WeightsWindow window)
    {
        ArgumentNullException.ThrowIfNull(window);
        if (window.Invalid(this) is { } problem)
        {
            throw new AttentionInputException(problem);
        }

        if (Layer is not null)
        {
            throw new AttentionInputException("a weights pass runs on projected Q and K, not on a layer's inputs");
        }

        if (RowPeriod > 0)
        {
            throw new AttentionInputException($"a weights pass runs on the heads as they are, not stacked ({this})");
        }

        return new AttentionGeometry(QueryShape, KeyShape, ValueShape, Options) { Pass = JobPass.Weights, Weights = window, Mask = Mask, RowPeriod = RowPeriod };
    }

    /// <summary>The same problem with Q, K and V projected from layer inputs of <paramref name="layer"/>'s shapes by the workers.</summary>
    public AttentionGeometry WithLayer(LayerShape? layer)
    {
        if (layer is not null && Mask is not null)
        {
            throw new AttentionInputException("an explicit mask is not supported in a layer job: compute the projections, then attention with the mask");
        }

        if (layer is not null && RowPeriod > 0)
        {
            throw new AttentionInputException($"a layer job projects the heads as they are, not stacked ({this})");
        }

        if (layer is not null && (layer.QueryIn < 1 || layer.KeyIn < 1 || layer.ValueIn < 1 || (!layer.SeparateValues && layer.ValueIn != layer.KeyIn) || KeyDim != ValueDim || Pass != JobPass.Attention))
        {
            throw new AttentionInputException($"{layer} cannot feed {this}: every input needs at least one feature, V without its own input takes the key input's, heads need equal K and V dims, and only the attention pass projects");
        }

        return new AttentionGeometry(QueryShape, KeyShape, ValueShape, Options) { Pass = Pass, Layer = layer, Weights = Weights, Mask = Mask, RowPeriod = RowPeriod };
    }

    /// <summary>
    /// The same problem with an explicit mask of <paramref name="shape"/> (null: none), or throws
    /// <see cref="AttentionInputException"/> when the shape does not broadcast or the mask is too large.
    /// </summary>
    public AttentionGeometry WithMask(MaskShape? shape)
    {
        if (shape is { } s)
        {
            if ((s.Batch != 1 && s.Batch != Batch) || (s.Heads != 1 && s.Heads != Heads))
            {
                throw new AttentionInputException($"mask of shape [{s.Batch}, {s.Heads}, {QuerySeq}, {KeySeq}] does not broadcast to the scores [{Batch}, {Heads}, {QuerySeq}, {KeySeq}]: its batch must be 1 or {Batch} and its heads 1 or {Heads}");
            }

            if (Layer is not null)
            {
                throw new AttentionInputException("an explicit mask is not supported in a layer job: compute the projections, then attention with the mask");
            }

            if (RowPeriod > 0)
            {
                throw new AttentionInputException($"an explicit mask applies to the heads as they are, not stacked ({this})");
            }

            if ((long)s.Batch * s.Heads * QuerySeq * KeySeq > AttentionMask.MaxElements)
            {
                throw AttentionMask.TooLarge("mask", s.Batch, s.Heads, QuerySeq, KeySeq);
            }
        }

        var masked = new AttentionGeometry(QueryShape, KeyShape, ValueShape, Options) { Pass = Pass, Layer = Layer, Weights = Weights, Mask = shape, RowPeriod = RowPeriod };
        if (MaskBlocks.SizeOf(masked) > MaskBlocks.MaxBytes)
        {
            throw new AttentionInputException($"a mask of shape [{shape!.Value.Batch}, {shape.Value.Heads}, {QuerySeq}, {KeySeq}] over {Batch} batch entries needs a {MaskBlocks.SizeOf(masked)}-byte block map, more than {MaskBlocks.MaxBytes}; use a larger block size or fewer batch entries per job");
        }

        return masked;
    }

    /// <summary>
    /// The same problem with its rows in periods of <paramref name="period"/>: query heads stacked
    /// into one, each of <paramref name="period"/> rows keeping its own diagonal (0: none). Only for
    /// the attention pass, without layer inputs, an explicit mask, ALiBi (its slopes and distances
    /// belong to heads and positions the kernel reads directly) or variable-length sequences;
    /// otherwise throws <see cref="AttentionInputException"/>.
    /// </summary>
    public AttentionGeometry WithRowPeriod(int period)
    {
        if (period == RowPeriod)
        {
            return this;
        }

        if (period < 0 || (period > 0 && (QuerySeq % period != 0 || Pass != JobPass.Attention || Layer is not null || Mask is not null || Options.AlibiSlopes is not null || Options.SequenceLengths is not null)))
        {
            throw new AttentionInputException($"rows in periods of {period} do not fit {this}: the period must divide the {QuerySeq} query rows, of an attention pass without layer inputs, an explicit mask, ALiBi or variable-length sequences");
        }

        return new AttentionGeometry(QueryShape, KeyShape, ValueShape, Options) { Pass = Pass, Layer = Layer, Weights = Weights, Mask = Mask, RowPeriod = period };
    }

    /// <summary>
    /// The keys query <paramref name="i"/> of batch <paramref name="b"/> sees: the interval
    /// [lo, hi) that the causal, window and padding masks leave (empty when lo ≥ hi).
    /// </summary>
    public (int Lo, int Hi) VisibleKeys(int b, int i)
    {
        long lo = 0;
        long hi = Options.KeyLengths?[b] ?? KeySeq;
        if (Options.SequenceLengths is { } sequences)
        {
            if (i >= sequences[b].Query)
            {
                return (0, 0);
            }

            hi = sequences[b].Key;
        }

        long diagonal = (RowPeriod > 0 ? i % RowPeriod : i) + DiagonalOffsetOf(b);
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

    /// <summary>
    /// Added to a query index of batch <paramref name="b"/> to find its diagonal key: <see cref="DiagonalOffset"/>,
    /// or with <see cref="AttentionOptions.SequenceLengths"/> the sequence's own (Key − Query bottom-right, else 0).
    /// </summary>
    public long DiagonalOffsetOf(int b)
        => Options.SequenceLengths is { } sequences
            ? Options.Alignment == DiagonalAlignment.BottomRight ? (long)sequences[b].Key - sequences[b].Query : 0
            : DiagonalOffset;

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

    /// <summary>
    /// The blocks of [blockStart, blockEnd) that rows [rowStart, rowStart + rowCount) see, narrowed
    /// to [first, end); empty (first ≥ end) when they see none. A shard's partials are exactly the
    /// canonical tree nodes of this range.
    /// </summary>
    public (int First, int End) VisibleBlocks(int b, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        var (first, end) = VisibleBlocks(b, rowStart, rowCount);
        first = Math.Max(first, blockStart);
        end = Math.Min(end, blockEnd);
        return first < end ? (first, end) : (blockStart, blockStart);
    }

    /// <summary>
    /// The tree nodes a shard's partials hold: the root alone when [blockStart, blockEnd) holds every
    /// block its rows see — the shard finishes its rows' tree itself, every other block being the
    /// identity for them — else the maximal aligned nodes of the part its rows see (none when they see nothing).
    /// </summary>
    public Partials.TreeNode[] ResultNodes(int b, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        var (first, end) = VisibleBlocks(b, rowStart, rowCount);
        return ResultNodes(BlockCount, (first, end), blockStart, blockEnd);
    }

    /// <summary><see cref="ResultNodes(int,int,int,int,int)"/> for rows that see blocks [seen.First, seen.End) of <paramref name="blockCount"/>.</summary>
    public static Partials.TreeNode[] ResultNodes(int blockCount, (int First, int End) seen, int blockStart, int blockEnd)
    {
        var (seenFirst, seenEnd) = seen;
        if (seenFirst < seenEnd && blockStart <= seenFirst && seenEnd <= blockEnd)
        {
            return [new Partials.TreeNode(Partials.CanonicalTree.Height(blockCount), 0)];
        }

        int first = Math.Max(seenFirst, blockStart), end = Math.Min(seenEnd, blockEnd);
        return first < end ? Partials.CanonicalTree.Decompose(first, end) : [];
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

    /// <summary>Keys the blocks [blockStart, blockEnd) hold (the last block of K may be short).</summary>
    public int KeysIn(int blockStart, int blockEnd)
        => (int)Math.Max(0, Math.Min((long)blockEnd * BlockSize, KeySeq) - ((long)blockStart * BlockSize));

    /// <summary>FLOPs of the visible work: 2·(d_k + d_v) per visible (query, key) pair, summed over batches and heads.</summary>
    public double VisibleFlops()
    {
        double pairs = 0;
        for (int b = 0; b < Batch; b++)
        {
            pairs += VisiblePairs(b, 0, QuerySeq, 0, BlockCount);
        }

        return 2.0 * pairs * Heads * (KeyDim + ValueDim);
    }

    public override string ToString() => $"{QueryShape}, {KeyShape}, {ValueShape}, block {BlockSize}{(Mask is { } m ? $", mask [{m.Batch}, {m.Heads}, {QuerySeq}, {KeySeq}]" : "")}{(RowPeriod > 0 ? $", rows in periods of {RowPeriod}" : "")}{Pass switch { JobPass.Coverage => ", coverage pass", JobPass.Weights => $", {Weights}", _ => "" }}";
}
