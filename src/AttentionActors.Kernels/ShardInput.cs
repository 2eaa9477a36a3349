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

    /// <summary>Views of <paramref name="problem"/>'s tensors for one shard; nothing is copied.</summary>
    public static ShardInput Slice(AttentionProblem problem, int b, int h, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        CheckPlace(g, b, h, rowStart, rowCount, blockStart, blockEnd);
        int kvh = h / g.GroupSize;
        int j0 = blockStart * g.BlockSize;
        int keys = g.KeysIn(blockStart, blockEnd);
        return new ShardInput(
            g, b, h, rowStart, rowCount, blockStart, blockEnd,
            problem.Q.Data.Slice((int)problem.Q.RowOffset(b, h, rowStart), rowCount * g.KeyDim),
            problem.K.Data.Slice((int)problem.K.RowOffset(b, kvh, j0), keys * g.KeyDim),
            problem.V.Data.Slice((int)problem.V.RowOffset(b, kvh, j0), keys * g.ValueDim));
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
            problem.Q.Data.Slice((int)problem.Q.RowOffset(b, h, rowStart), rowCount * g.KeyDim),
            problem.K.Data.Slice((int)problem.K.RowOffset(b, kvh, blockStart * g.BlockSize), g.KeysIn(blockStart, blockEnd) * g.KeyDim),
            ReadOnlyMemory<float>.Empty,
            lse.Slice((int)((((long)b * g.Heads) + h) * g.QuerySeq) + rowStart, rowCount));
    }

    /// <summary>
    /// The problem this input poses, on windows of Q, K and V: checks the place, the element counts
    /// and every value (finite, no overflow), so data that came from another process is never
    /// computed on unchecked. Throws <see cref="AttentionInputException"/> naming what is wrong.
    /// </summary>
    public AttentionProblem ToProblem()
    {
        CheckPlace(Geometry, Batch, Head, RowStart, RowCount, BlockStart, BlockEnd);
        int kvh = Head / Geometry.GroupSize;
        int keys = KeyCount;
        var q = AttentionTensor.Window(Geometry.QueryShape, MemoryOf(Q), Batch, Head, RowStart, RowCount);
        var k = AttentionTensor.Window(Geometry.KeyShape, MemoryOf(K), Batch, kvh, BlockStart * Geometry.BlockSize, keys);
        var v = AttentionTensor.Window(Geometry.ValueShape, MemoryOf(V), Batch, kvh, BlockStart * Geometry.BlockSize, Geometry.Pass == JobPass.Coverage ? 0 : keys);
        return AttentionProblem.Create(Geometry, q, k, v);
    }

    public override string ToString() => $"batch {Batch}, head {Head}, rows [{RowStart}, {RowStart + RowCount}), key blocks [{BlockStart}, {BlockEnd})";

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
