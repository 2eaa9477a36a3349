namespace AttentionActors.Kernels;

/// <summary>
/// What a worker needs for one shard and nothing more: the job's geometry, the shard's place
/// (batch <see cref="Batch"/>, query head <see cref="Head"/>, rows [RowStart, RowStart + RowCount),
/// key blocks [BlockStart, BlockEnd)), its Q rows <c>[RowCount, d_k]</c> and the K <c>[keys, d_k]</c>
/// and V <c>[keys, d_v]</c> rows of those blocks, keys counted from the first key of BlockStart.
/// In one process the data are views of the job's tensors; over the wire, copies. A coverage pass
/// (<see cref="JobPass.Coverage"/>) carries no V and the log-sum-exp <c>Lse [RowCount]</c> of its rows instead.
/// </summary>
public sealed record ShardInput(
    AttentionGeometry Geometry,
    int Batch,
    int Head,
    int RowStart,
    int RowCount,
    int BlockStart,
    int BlockEnd,
    ReadOnlyMemory<float> Q,
    ReadOnlyMemory<float> K,
    ReadOnlyMemory<float> V,
    ReadOnlyMemory<float> Lse = default)
{
    /// <summary>Keys the blocks [BlockStart, BlockEnd) hold (the last block of K may be short).</summary>
    public int KeyCount => Geometry.KeysIn(BlockStart, BlockEnd);

    /// <summary>
    /// With an explicit mask (<see cref="AttentionGeometry.Mask"/>): what the shard's rows read of it,
    /// <c>[RowCount, keys]</c> over the keys K holds, one plane per query head the shard carries whose
    /// plane differs (a weights shard of a per-head mask: <c>[heads, RowCount, keys]</c>); else empty.
    /// </summary>
    public ReadOnlyMemory<float> Mask { get; init; }

    /// <summary>Values from one row of <see cref="Mask"/> to the next when it is a view of the whole mask (one process); 0 when compact.</summary>
    public int MaskStride { get; init; }

    /// <summary>The mask rows back to back, as they travel: <see cref="Mask"/> itself unless it is a strided view.</summary>
    public ReadOnlyMemory<float> CompactMask()
    {
        int keys = KeyCount;
        if (MaskStride == 0 || MaskStride == keys || Mask.IsEmpty)
        {
            return Mask;
        }

        var compact = new float[(long)RowCount * keys];
        for (int r = 0; r < RowCount; r++)
        {
            Mask.Span.Slice(r * MaskStride, keys).CopyTo(compact.AsSpan(r * keys, keys));
        }

        return compact;
    }

    /// <summary>
    /// Whether Q, K, V and the mask are still the views <see cref="Slice"/> took of a problem this
    /// process has checked, in that problem's geometry: <see cref="ToProblem"/> then checks the
    /// shard's place and shapes, not every value again. A worker of the embedded pipeline would
    /// otherwise scan each shard's keys and values once more before computing (half of a decoding
    /// step's time there), and again for every query head sharing them. Data from another process
    /// arrives as a new input, and a copy made with other data or another geometry (<c>with</c>)
    /// no longer holds those views: both are checked in full.
    /// </summary>
    internal bool ValuesChecked => checkedViews is { } c && ReferenceEquals(c.Geometry, Geometry)
        && c.Q.Equals(Q) && c.K.Equals(K) && c.V.Equals(V) && c.Mask.Equals(Mask) && ReferenceEquals(c.Cache, Cache);

    /// <summary>
    /// In one process, a step against a <see cref="KeyValueCache"/>: the shard's keys and values
    /// are the cache's blocks [BlockStart, BlockEnd) of its key/value head, and K and V are empty.
    /// Such a shard leaves the process as a copy of those rows (<see cref="WithCacheRows"/>).
    /// </summary>
    internal KeyValueCache? Cache { get; init; }

    /// <summary>
    /// This shard with the keys and values of its blocks copied out of its <see cref="Cache"/> into
    /// K and V, as a shard of tensors carries them (the same bits: the kernel computes the same
    /// products from either); a shard without a cache as it is.
    /// </summary>
    internal ShardInput WithCacheRows()
    {
        if (Cache is not { } cache)
        {
            return this;
        }

        int keys = KeyCount, kvh = Head / Geometry.GroupSize;
        var k = new float[(long)keys * Geometry.KeyDim];
        var v = new float[(long)keys * Geometry.ValueDim];
        cache.CopyRows(Batch, kvh, BlockStart * Geometry.BlockSize, keys, k, v);
        return this with { K = k, V = v, Cache = null };
    }

    private CheckedViews? checkedViews;

    /// <summary>In a layer job (<see cref="AttentionGeometry.Layer"/>): the inputs and head weights that Q, K and V are projected from; Q, K and V are then empty.</summary>
    public LayerRows? Layer { get; init; }

    /// <summary>
    /// Views for one shard of a layer job: the shard's rows of X, its blocks' rows of the key and
    /// value inputs, and the rows of W_q (head h), W_k and W_v (its key head) with their biases.
    /// </summary>
    public static ShardInput SliceLayer(LayerProblem problem, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        var layer = g.Layer!;
        CheckPlace(g, b, h, rowStart, rowCount, blockStart, blockEnd);
        int kvh = h / g.GroupSize;
        int j0 = blockStart * g.BlockSize, keys = g.KeysIn(blockStart, blockEnd);
        var w = problem.Weights;
        ReadOnlyMemory<float> Rows(float[] data, int first, int count, int width) => data.AsMemory((int)((long)first * width), count * width);
        ReadOnlyMemory<float> Bias(float[]? bias, int head, int dim) => bias is null ? ReadOnlyMemory<float>.Empty : bias.AsMemory(head * dim, dim);
        return new ShardInput(g, b, h, rowStart, rowCount, blockStart, blockEnd, ReadOnlyMemory<float>.Empty, ReadOnlyMemory<float>.Empty, ReadOnlyMemory<float>.Empty)
        {
            Layer = new LayerRows(
                Rows(problem.X, (b * g.QuerySeq) + rowStart, rowCount, layer.QueryIn),
                Rows(problem.KeyInput, (b * g.KeySeq) + j0, keys, layer.KeyIn),
                layer.SeparateValues ? Rows(problem.ValueInput, (b * g.KeySeq) + j0, keys, layer.ValueIn) : ReadOnlyMemory<float>.Empty,
                Rows(w.Wq, h * g.KeyDim, g.KeyDim, layer.QueryIn),
                Bias(w.Bq, h, g.KeyDim),
                Rows(w.Wk, kvh * g.KeyDim, g.KeyDim, layer.KeyIn),
                Bias(w.Bk, kvh, g.KeyDim),
                Rows(w.Wv, kvh * g.ValueDim, g.ValueDim, layer.ValueIn),
                Bias(w.Bv, kvh, g.ValueDim)),
        };
    }

    /// <summary>
    /// A layer shard's Q rows and K/V blocks, projected from its inputs (y = x·Wᵀ + b per row, the
    /// bits of <see cref="MultiHeadLayer.Project"/>); other shards are returned as they are. Every
    /// input is checked first: counts against the geometry and finite values, named on failure.
    /// With a <paramref name="cache"/> (one per job), Q row ranges and K/V blocks projected before
    /// by another shard are taken from it: each row's projection has the same bits wherever it is made.
    /// </summary>
    public ShardInput Projected(IProjectionCache? cache = null)
    {
        if (Layer is not { } rows)
        {
            return this;
        }

        var layer = Geometry.Layer ?? throw new AttentionInputException($"{this} carries layer inputs but its job is not a layer job");
        CheckPlace(Geometry, Batch, Head, RowStart, RowCount, BlockStart, BlockEnd);
        int keys = KeyCount, dk = Geometry.KeyDim, dv = Geometry.ValueDim, kvh = Head / Geometry.GroupSize;
        if (rows.X.Length != (long)RowCount * layer.QueryIn || rows.KeyIn.Length != (long)keys * layer.KeyIn || rows.ValueIn.Length != (layer.SeparateValues ? (long)keys * layer.ValueIn : 0))
        {
            throw new AttentionInputException($"{this}: X, key and value input rows hold {rows.X.Length}, {rows.KeyIn.Length} and {rows.ValueIn.Length} values; the layer needs {(long)RowCount * layer.QueryIn}, {(long)keys * layer.KeyIn} and {(layer.SeparateValues ? (long)keys * layer.ValueIn : 0)}");
        }

        var wq = LayerArray("W_q rows", rows.Wq, (long)dk * layer.QueryIn);
        var wk = LayerArray("W_k rows", rows.Wk, (long)dk * layer.KeyIn);
        var wv = LayerArray("W_v rows", rows.Wv, (long)dv * layer.ValueIn);
        var (bq, bk, bv) = (LayerBias("b_q", rows.Bq, layer.QueryBias, dk), LayerBias("b_k", rows.Bk, layer.KeyBias, dk), LayerBias("b_v", rows.Bv, layer.ValueBias, dv));
        float[] Cached(ProjectionKey key, Func<float[]> project) => cache is null ? project() : cache.GetOrAdd(key, project);

        var q = Cached(new ProjectionKey('q', Batch, Head, RowStart, RowCount), () => Projection.Linear(LayerArray("X rows", rows.X, rows.X.Length), RowCount, layer.QueryIn, wq, dk, bq));
        var k = new float[(long)keys * dk];
        var v = new float[(long)keys * dv];

        // W_k and W_v are packed once for all the blocks (and only if some block is not cached).
        PackedWeights? packedK = null, packedV = null;
        for (int kb = BlockStart; kb < BlockEnd; kb++)
        {
            int j = (kb - BlockStart) * Geometry.BlockSize, n = Geometry.KeysIn(kb, kb + 1);
            var keyIn = rows.KeyIn.Slice(j * layer.KeyIn, n * layer.KeyIn);
            var valueIn = layer.SeparateValues ? rows.ValueIn.Slice(j * layer.ValueIn, n * layer.ValueIn) : keyIn;
            Cached(new ProjectionKey('k', Batch, kvh, kb, 1), () => Projection.Linear(LayerArray("key input rows", keyIn, keyIn.Length), n, packedK ??= Projection.Pack(wk, dk, layer.KeyIn), bk)).CopyTo(k, (long)j * dk);
            Cached(new ProjectionKey('v', Batch, kvh, kb, 1), () => Projection.Linear(LayerArray("value input rows", valueIn, valueIn.Length), n, packedV ??= Projection.Pack(wv, dv, layer.ValueIn), bv)).CopyTo(v, (long)j * dv);
        }

        return this with { Q = q, K = k, V = v, Layer = null };
    }

    private float[] LayerArray(string name, ReadOnlyMemory<float> data, long expected)
    {
        if (data.Length != expected)
        {
            throw new AttentionInputException($"{this}: {name} hold {data.Length} values; the layer needs {expected}");
        }

        var array = data.ToArray();
        int bad = FiniteCheck.FirstNonFinite(array);
        return bad < 0 ? array : throw new AttentionInputException($"{this}: {name} hold {array[bad]} at flat index {bad}");
    }

    private float[]? LayerBias(string name, ReadOnlyMemory<float> data, bool present, int dim)
        => present ? LayerArray(name, data, dim) : data.Length == 0 ? null : throw new AttentionInputException($"{this}: {name} arrived for a layer without that bias");

    /// <summary>Views of <paramref name="problem"/>'s tensors for one shard; nothing is copied.</summary>
    public static ShardInput Slice(AttentionProblem problem, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        CheckPlace(g, b, h, rowStart, rowCount, blockStart, blockEnd);
        int kvh = h / g.GroupSize;
        int j0 = blockStart * g.BlockSize;
        int keys = g.KeysIn(blockStart, blockEnd);
        var cache = problem.Cache;
        return new ShardInput(
            g, b, h, rowStart, rowCount, blockStart, blockEnd,
            problem.Q.Rows(b, h, rowStart, rowCount),
            cache is null ? problem.K.Rows(b, kvh, j0, keys) : ReadOnlyMemory<float>.Empty,
            cache is null ? problem.V.Rows(b, kvh, j0, keys) : ReadOnlyMemory<float>.Empty)
        {
            Cache = cache,
            Mask = problem.Mask?.View(b, h, rowStart, rowCount, j0, keys) ?? ReadOnlyMemory<float>.Empty,
            MaskStride = problem.Mask is null ? 0 : g.KeySeq,
        }.Checked();
    }

    /// <summary>This input, its current views marked as taken from a checked problem (see <see cref="ValuesChecked"/>).</summary>
    private ShardInput Checked()
    {
        checkedViews = new CheckedViews(Geometry, Q, K, V, Mask, Cache);
        return this;
    }

    /// <summary>
    /// Views for one shard of the coverage pass over <paramref name="problem"/>: Q rows, K blocks and
    /// the rows' slice of <paramref name="lse"/> <c>[B, H, Nq]</c>; no V.
    /// </summary>
    public static ShardInput SliceCoverage(AttentionProblem problem, ReadOnlyMemory<float> lse, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        CheckPlace(g, b, h, rowStart, rowCount, blockStart, blockEnd);
        int kvh = h / g.GroupSize;
        return new ShardInput(
            g.ForPass(JobPass.Coverage), b, h, rowStart, rowCount, blockStart, blockEnd,
            problem.Q.Rows(b, h, rowStart, rowCount),
            problem.K.Rows(b, kvh, blockStart * g.BlockSize, g.KeysIn(blockStart, blockEnd)),
            ReadOnlyMemory<float>.Empty,
            lse.Slice((int)((((long)b * g.Heads) + h) * g.QuerySeq) + rowStart, rowCount))
        {
            Mask = problem.Mask?.View(b, h, rowStart, rowCount, blockStart * g.BlockSize, g.KeysIn(blockStart, blockEnd)) ?? ReadOnlyMemory<float>.Empty,
            MaskStride = problem.Mask is null ? 0 : g.KeySeq,
        };
    }

    /// <summary>
    /// One shard of the weights pass over <paramref name="window"/> of <paramref name="problem"/>
    /// (<see cref="AttentionGeometry.ForWeights"/>): the shard's rows of every query head in use
    /// <c>Q [heads, RowCount, d_k]</c> and their log-sum-exp <c>Lse [heads, RowCount]</c>, and the
    /// keys of every key head in use <c>K [kv heads, keys, d_k]</c> of blocks
    /// [blockStart, <see cref="WeightsCellRange.DataBlockEnd"/>); no V. Copies, as the heads' rows are not contiguous.
    /// </summary>
    public static ShardInput SliceWeights(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        var g = problem.Geometry.ForWeights(window);
        CheckPlace(g, window.Batch, window.FirstHead, rowStart, rowCount, blockStart, blockEnd);
        var cells = window.CellsOf(g, rowStart, rowCount, blockStart, blockEnd);
        int heads = window.HeadCount(g), d = g.KeyDim;
        var (firstKv, kvHeads) = window.KvHeads(g);
        int j0 = blockStart * g.BlockSize, keys = g.KeysIn(blockStart, cells.DataBlockEnd);
        var q = new float[(long)heads * rowCount * d];
        var l = new float[(long)heads * rowCount];
        var k = new float[(long)kvHeads * keys * d];
        for (int i = 0; i < heads; i++)
        {
            int h = window.FirstHead + i;
            problem.Q.Rows(window.Batch, h, rowStart, rowCount).Span.CopyTo(q.AsSpan(i * rowCount * d));
            lse.Span.Slice((int)((((long)window.Batch * g.Heads) + h) * g.QuerySeq) + rowStart, rowCount).CopyTo(l.AsSpan(i * rowCount));
        }

        for (int i = 0; i < kvHeads; i++)
        {
            problem.K.Rows(window.Batch, firstKv + i, j0, keys).Span.CopyTo(k.AsSpan(i * keys * d));
        }

        float[]? mask = null;
        if (problem.Mask is { } m)
        {
            int planes = MaskPlanes(g, heads);
            mask = new float[(long)planes * rowCount * keys];
            for (int i = 0; i < planes; i++)
            {
                m.Copy(window.Batch, window.FirstHead + i, rowStart, rowCount, j0, keys).CopyTo(mask.AsSpan(i * rowCount * keys));
            }
        }

        return new ShardInput(g, window.Batch, window.FirstHead, rowStart, rowCount, blockStart, blockEnd, q, k, ReadOnlyMemory<float>.Empty, l)
        {
            Mask = mask ?? ReadOnlyMemory<float>.Empty,
        };
    }

    /// <summary>Mask planes a weights shard over <paramref name="heads"/> query heads carries: one per head with a per-head mask, else one.</summary>
    private static int MaskPlanes(AttentionGeometry g, int heads) => g.Mask is { } shape ? (shape.Heads == 1 ? 1 : heads) : 0;

    /// <summary>The mask window of rows [RowStart, +RowCount) × keys [keyStart, +keys) from plane data <paramref name="data"/>, or null without a mask; counts checked.</summary>
    private AttentionMask? MaskWindow(ReadOnlyMemory<float> data, int head, int keyStart, int keys, int stride = 0)
        => Geometry.Mask is { } shape
            ? AttentionMask.Window(shape, Geometry.QuerySeq, Geometry.KeySeq, data, Batch, head, RowStart, RowCount, keyStart, keys, stride)
            : null;

    /// <summary>
    /// For a weights shard: the problem of each query head in use (windows of its Q rows and its key
    /// head's keys), with every place, count and value checked as in <see cref="ToProblem"/>.
    /// </summary>
    public AttentionProblem[] WeightsProblems()
    {
        var g = Geometry;
        var window = g.Weights ?? throw new AttentionInputException($"{this} is not a weights shard");
        if (Batch != window.Batch || Head != window.FirstHead)
        {
            throw new AttentionInputException($"{this} does not belong to the {window}");
        }

        CheckPlace(g, Batch, Head, RowStart, RowCount, BlockStart, BlockEnd);
        var cells = window.CellsOf(g, RowStart, RowCount, BlockStart, BlockEnd);
        int heads = window.HeadCount(g), d = g.KeyDim;
        var (firstKv, kvHeads) = window.KvHeads(g);
        int j0 = BlockStart * g.BlockSize, keys = g.KeysIn(BlockStart, cells.DataBlockEnd);
        if (Q.Length != (long)heads * RowCount * d || K.Length != (long)kvHeads * keys * d || V.Length != 0 || Lse.Length != (long)heads * RowCount)
        {
            throw new AttentionInputException($"{this} of the {window} carries Q {Q.Length}, K {K.Length}, V {V.Length} and lse {Lse.Length} values; it needs {(long)heads * RowCount * d}, {(long)kvHeads * keys * d}, 0 and {(long)heads * RowCount}");
        }

        int planes = MaskPlanes(g, heads);
        if (Mask.Length != (long)planes * RowCount * keys)
        {
            throw new AttentionInputException($"{this} of the {window} carries {Mask.Length} mask values; it needs {(long)planes * RowCount * keys}");
        }

        var problems = new AttentionProblem[heads];
        for (int i = 0; i < heads; i++)
        {
            int h = window.FirstHead + i, kvi = (h / g.GroupSize) - firstKv;
            var q = AttentionTensor.Window(g.QueryShape, MemoryOf(Q.Slice(i * RowCount * d, RowCount * d)), Batch, h, RowStart, RowCount);
            var k = AttentionTensor.Window(g.KeyShape, MemoryOf(K.Slice(kvi * keys * d, keys * d)), Batch, h / g.GroupSize, j0, keys);
            var v = AttentionTensor.Window(g.ValueShape, Memory<float>.Empty, Batch, h / g.GroupSize, j0, 0);
            // One plane per head with a per-head mask, else the one plane every head reads.
            var mask = planes == 0 ? null : MaskWindow(Mask.Slice((planes == 1 ? 0 : i) * RowCount * keys, RowCount * keys), h, j0, keys);
            problems[i] = AttentionProblem.Create(g, q, k, v, mask);
        }

        return problems;
    }

    /// <summary>
    /// The problem this input poses, on windows of Q, K and V: checks the place, the element counts
    /// and every value (finite, no overflow; not again for <see cref="ValuesChecked"/> views), so
    /// data that came from another process is never computed on unchecked. Throws
    /// <see cref="AttentionInputException"/> naming what is wrong.
    /// </summary>
    public AttentionProblem ToProblem()
    {
        CheckPlace(Geometry, Batch, Head, RowStart, RowCount, BlockStart, BlockEnd);
        int kvh = Head / Geometry.GroupSize;
        int keys = KeyCount;
        var q = AttentionTensor.Window(Geometry.QueryShape, MemoryOf(Q), Batch, Head, RowStart, RowCount);
        if (Cache is { } cache)
        {
            return CacheProblem(cache, q);
        }

        var k = AttentionTensor.Window(Geometry.KeyShape, MemoryOf(K), Batch, kvh, BlockStart * Geometry.BlockSize, keys);
        var v = AttentionTensor.Window(Geometry.ValueShape, MemoryOf(V), Batch, kvh, BlockStart * Geometry.BlockSize, Geometry.Pass == JobPass.Coverage ? 0 : keys);
        if (Geometry.Mask is null && Mask.Length != 0)
        {
            throw new AttentionInputException($"{this} carries {Mask.Length} mask values but its job has no explicit mask");
        }

        return AttentionProblem.Create(Geometry, q, k, v, MaskWindow(Mask, Head, BlockStart * Geometry.BlockSize, keys, MaskStride), checkValues: !ValuesChecked);
    }

    /// <summary>
    /// <see cref="ToProblem"/> for a shard of a step against <paramref name="cache"/>: K and V are
    /// windows of no rows, the kernel reads the cache. Q's values and the overflow bounds are checked
    /// (with the cache's largest key norm and value) unless these are the views of a checked step.
    /// </summary>
    private AttentionProblem CacheProblem(KeyValueCache cache, AttentionTensor q)
    {
        if (!K.IsEmpty || !V.IsEmpty || !Mask.IsEmpty || Layer is not null || Geometry.Pass != JobPass.Attention)
        {
            throw new AttentionInputException($"{this} reads a key/value cache but also carries K, V, mask or layer data, or is not an attention shard");
        }

        var problem = AttentionProblem.Create(Geometry, q, KeyValueCache.NoRows(Geometry.KeyShape), KeyValueCache.NoRows(Geometry.ValueShape), null, checkValues: false).WithCache(cache);
        if (!ValuesChecked)
        {
            cache.CheckStep(problem, ProblemValidator.MaxRowNorm(q, out _));
        }

        return problem;
    }

    public override string ToString() => $"batch {Batch}, head {Head}, rows [{RowStart}, {RowStart + RowCount}), key blocks [{BlockStart}, {BlockEnd})";

    /// <summary>The geometry and views <see cref="Slice"/> took from a checked problem.</summary>
    private sealed record CheckedViews(AttentionGeometry Geometry, ReadOnlyMemory<float> Q, ReadOnlyMemory<float> K, ReadOnlyMemory<float> V, ReadOnlyMemory<float> Mask, KeyValueCache? Cache);

    // The kernel only reads its inputs; the tensor type is shared with outputs, hence the cast.
    private static Memory<float> MemoryOf(ReadOnlyMemory<float> data) => System.Runtime.InteropServices.MemoryMarshal.AsMemory(data);

    private static void CheckPlace(AttentionGeometry g, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        if (b < 0 || b >= g.Batch || h < 0 || h >= g.Heads)
        {
            throw new AttentionInputException($"shard of batch {b}, head {h} is outside the job's [0, {g.Batch}) × [0, {g.Heads})");
        }

        if (rowStart < 0 || rowCount < 0 || rowStart + (long)rowCount > g.QuerySeq)
        {
            throw new AttentionInputException($"shard rows [{rowStart}, {rowStart + (long)rowCount}) are outside the job's [0, {g.QuerySeq})");
        }

        if (blockStart < 0 || blockEnd < blockStart || blockEnd > g.BlockCount)
        {
            throw new AttentionInputException($"shard key blocks [{blockStart}, {blockEnd}) are outside the job's [0, {g.BlockCount})");
        }
    }
}
