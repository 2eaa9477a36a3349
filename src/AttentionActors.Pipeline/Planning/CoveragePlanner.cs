using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// Splits a coverage pass (<see cref="JobPass.Coverage"/>) into shards: for every (batch, key head)
/// a grid of key block ranges × query block ranges of each query head in the group. Rows start on
/// query blocks of the key block size, so a shard's rows are whole leaves of the coverage tree and
/// it returns their subtrees; all shards of one key range share its block boundaries, so the reducer
/// finishes each key range's tree alone. Ranges are halved, the side that weighs more in bytes first,
/// until every shard fits the byte budget and there are a few shards per worker. Shards whose rows
/// see none of their keys are left out: their sums are 0, and the tree skips an absent subtree
/// exactly as it adds 0.
/// </summary>
public static class CoveragePlanner
{
    private const int ShardsPerWorker = 4;

    public static ShardPlan Plan(AttentionGeometry geometry, int workers, PlanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        options ??= new PlanOptions();
        var g = geometry.ForPass(JobPass.Coverage);
        int queryBlocks = (int)(((long)g.QuerySeq + g.BlockSize - 1) / g.BlockSize);
        int leafLevels = Kernels.Partials.CanonicalTree.Height(Inspection.CoverageLeaves(g)) + 1;
        long QueryBytes(int rangeBlocks) => (long)Math.Min((long)rangeBlocks * g.BlockSize, g.QuerySeq) * (g.KeyDim + 1) * 4;
        long KeyBytes(int rangeBlocks) => (long)g.KeysIn(0, rangeBlocks) * ((g.KeyDim + (2 * leafLevels)) * 4);

        // Ranges per head (query blocks) and per key head (key blocks), doubled until the shards fit and share the workers.
        int rowSplits = 1, keySplits = 1;
        long groups = (long)g.Batch * g.Heads;
        while (true)
        {
            int rowRange = Ceil(queryBlocks, rowSplits), keyRange = Ceil(g.BlockCount, keySplits);
            long queryBytes = QueryBytes(rowRange), keyBytes = KeyBytes(keyRange);
            long maskBytes = g.Mask is null ? 0 : (long)Math.Min((long)rowRange * g.BlockSize, g.QuerySeq) * g.KeysIn(0, keyRange) * 4;
            bool fits = queryBytes + keyBytes + maskBytes <= options.MaxShardBytes;
            bool enough = groups * rowSplits * keySplits >= (long)workers * ShardsPerWorker;
            bool canRows = rowSplits < queryBlocks, canKeys = keySplits < g.BlockCount;
            if ((fits && enough) || (!canRows && !canKeys) || groups * rowSplits * keySplits * 2 > options.MaxShards)
            {
                if (!fits)
                {
                    throw new AttentionInputException($"a coverage shard of {rowRange * g.BlockSize:N0} rows and {g.KeysIn(0, keyRange):N0} keys needs {queryBytes + keyBytes + maskBytes:N0} bytes, more than the {options.MaxShardBytes:N0}-byte shard budget within {options.MaxShards:N0} shards; raise the budget (--max-shard-bytes) or the shard limit, or lower the block size");
                }

                break;
            }

            if (canRows && (!canKeys || queryBytes >= keyBytes))
            {
                rowSplits = Math.Min(rowSplits * 2, queryBlocks);
            }
            else
            {
                keySplits = Math.Min(keySplits * 2, g.BlockCount);
            }
        }

        var drafts = new List<(int B, int H, int RowStart, int RowCount, int BlockStart, int BlockEnd, long Pairs, long Bytes)>();
        for (int b = 0; b < g.Batch; b++)
        {
            for (int h = 0; h < g.Heads; h++)
            {
                for (int r = 0; r < rowSplits; r++)
                {
                    int rowStart = (int)Math.Min((long)Cut(queryBlocks, rowSplits, r) * g.BlockSize, g.QuerySeq);
                    int rowEnd = (int)Math.Min((long)Cut(queryBlocks, rowSplits, r + 1) * g.BlockSize, g.QuerySeq);
                    for (int k = 0; k < keySplits && rowEnd > rowStart; k++)
                    {
                        int blockStart = Cut(g.BlockCount, keySplits, k), blockEnd = Cut(g.BlockCount, keySplits, k + 1);
                        long pairs = g.VisiblePairs(b, rowStart, rowEnd - rowStart, blockStart, blockEnd);
                        if (pairs > 0)
                        {
                            int leaves = (rowEnd - rowStart + g.BlockSize - 1) / g.BlockSize;
                            long bytes = ((long)(rowEnd - rowStart) * (g.KeyDim + 1) * 4) + ((long)g.KeysIn(blockStart, blockEnd) * (g.KeyDim + (2 * Kernels.Partials.CanonicalTree.Height(leaves)) + 1) * 4)
                                + (g.Mask is null ? 0 : (long)(rowEnd - rowStart) * g.KeysIn(blockStart, blockEnd) * 4);
                            drafts.Add((b, h, rowStart, rowEnd - rowStart, blockStart, blockEnd, pairs, bytes));
                        }
                    }
                }
            }
        }

        // Work per pair: the logit (2·d_k FLOPs) and one exponential and add, counted as 2 more.
        var shards = drafts
            .OrderByDescending(d => d.Pairs).ThenBy(d => d.B).ThenBy(d => d.H).ThenBy(d => d.RowStart).ThenBy(d => d.BlockStart)
            .Select((d, i) => new Shard(i, d.B, d.H, d.RowStart, d.RowCount, d.BlockStart, d.BlockEnd, d.Pairs, 2.0 * d.Pairs * (g.KeyDim + 1), d.Bytes))
            .ToList();
        return new ShardPlan(shards, workers, ShardPlanner.Deal(shards.Select(s => s.Flops), workers));
    }

    private static int Ceil(int count, int parts) => (count + parts - 1) / parts;

    /// <summary>The start of range <paramref name="i"/> of <paramref name="parts"/> near-equal ranges over <paramref name="count"/> units.</summary>
    private static int Cut(int count, int parts, int i) => (int)((long)count * i / parts);
}
