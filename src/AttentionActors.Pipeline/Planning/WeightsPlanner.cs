using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// Splits a weights pass (<see cref="JobPass.Weights"/>) into shards of whole cells: a grid of cell
/// row ranges × key block ranges of the window. A shard carries its rows of every query head in use
/// and the keys of every key head in use, so each of its cells is computed whole, in the order that
/// fixes its bits, and the reducer only checks and forwards cells. A shard owns the cell columns
/// whose first key lies in its blocks (<see cref="WeightsWindow.CellsOf"/>). Ranges are halved, the
/// side that weighs more in bytes first, until every shard fits the byte budget and there are a few
/// shards per worker; block ranges that own no cell are left out.
/// </summary>
public static class WeightsPlanner
{
    private const int ShardsPerWorker = 4;

    public static ShardPlan Plan(AttentionGeometry geometry, int workers, PlanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        options ??= new PlanOptions();
        var g = geometry;
        var w = g.Weights ?? throw new ArgumentException($"{g} is not a weights pass", nameof(geometry));
        int firstBlock = w.ColLo / g.BlockSize, blocks = ((w.ColHi - 1) / g.BlockSize) + 1 - firstBlock;
        int rowSplits = 1, keySplits = 1;
        List<Draft> drafts;
        while (true)
        {
            drafts = Drafts(g, w, rowSplits, keySplits, firstBlock, blocks);
            var largest = drafts.MaxBy(d => d.Bytes);
            bool fits = largest.Bytes <= options.MaxShardBytes;
            bool enough = drafts.Count >= (long)workers * ShardsPerWorker;
            bool canRows = rowSplits < w.CellRows, canKeys = keySplits < blocks;
            if ((fits && enough) || (!canRows && !canKeys) || (long)drafts.Count * 2 > options.MaxShards)
            {
                if (!fits)
                {
                    throw new AttentionInputException($"a weights shard of {largest.RowCount:N0} rows and {largest.Keys:N0} keys over {w.HeadCount(g)} heads needs {largest.Bytes:N0} bytes, more than the {options.MaxShardBytes:N0}-byte shard budget within {options.MaxShards:N0} shards; raise the budget (--max-shard-bytes), or ask for more, smaller cells (--size)");
                }

                break;
            }

            if (canRows && (!canKeys || largest.QueryBytes >= largest.KeyBytes))
            {
                rowSplits = Math.Min(rowSplits * 2, w.CellRows);
            }
            else
            {
                keySplits = Math.Min(keySplits * 2, blocks);
            }
        }

        var shards = drafts
            .OrderByDescending(d => d.Pairs).ThenBy(d => d.RowStart).ThenBy(d => d.BlockStart)
            .Select((d, i) => new Shard(i, w.Batch, w.FirstHead, d.RowStart, d.RowCount, d.BlockStart, d.BlockEnd, d.Pairs, 2.0 * d.Pairs * (g.KeyDim + 1), d.Bytes))
            .ToList();
        return new ShardPlan(shards, workers, ShardPlanner.Deal(shards.Select(s => s.Flops), workers));
    }

    /// <summary>The shards of a grid of <paramref name="rowSplits"/> cell row ranges × <paramref name="keySplits"/> block ranges that own cells.</summary>
    private static List<Draft> Drafts(AttentionGeometry g, WeightsWindow w, int rowSplits, int keySplits, int firstBlock, int blocks)
    {
        int heads = w.HeadCount(g), kvHeads = w.KvHeads(g).Count;
        var drafts = new List<Draft>();
        for (int r = 0; r < rowSplits; r++)
        {
            int rowStart = w.CellRowStart(Cut(w.CellRows, rowSplits, r)), rowEnd = w.CellRowStart(Cut(w.CellRows, rowSplits, r + 1));
            for (int k = 0; k < keySplits && rowEnd > rowStart; k++)
            {
                int blockStart = firstBlock + Cut(blocks, keySplits, k), blockEnd = firstBlock + Cut(blocks, keySplits, k + 1);
                var cells = w.CellsOf(g, rowStart, rowEnd - rowStart, blockStart, blockEnd);
                if (cells.Count == 0)
                {
                    continue;
                }

                int rows = rowEnd - rowStart, keys = g.KeysIn(blockStart, cells.DataBlockEnd);
                long queryBytes = (long)heads * rows * (g.KeyDim + 1) * 4, keyBytes = (long)kvHeads * keys * g.KeyDim * 4;
                long maskBytes = g.Mask is { } mask ? (long)(mask.Heads == 1 ? 1 : heads) * rows * keys * 4 : 0;
                drafts.Add(new Draft(rowStart, rows, blockStart, blockEnd, keys, (long)heads * rows * keys, queryBytes, keyBytes, queryBytes + keyBytes + maskBytes + (cells.Count * 4)));
            }
        }

        return drafts;
    }

    /// <summary>The start of range <paramref name="i"/> of <paramref name="parts"/> near-equal ranges over <paramref name="count"/> units.</summary>
    private static int Cut(int count, int parts, int i) => (int)((long)count * i / parts);

    private readonly record struct Draft(int RowStart, int RowCount, int BlockStart, int BlockEnd, int Keys, long Pairs, long QueryBytes, long KeyBytes, long Bytes);
}
