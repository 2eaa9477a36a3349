using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// The trust boundary for weight cells: a weights shard must return exactly the cells it owns
/// (<see cref="WeightsWindow.CellsOf"/>), one value each, and every cell is a max or mean of weights
/// e^(s − lse), so 0 ≤ cell ≤ 1 up to float32 rounding.
/// </summary>
internal static class WeightsCheck
{
    /// <summary>Slack on cell ≤ 1: the lse is rounded to float32, so the largest weight may pass 1 by a few ulps.</summary>
    public const float Limit = 1.001f;

    /// <summary>Why <paramref name="cells"/> cannot be taken as the cells of <paramref name="shard"/>, or null when they can.</summary>
    public static string? Invalid(AttentionGeometry g, Shard shard, WeightsCells cells)
    {
        var window = g.Weights!;
        var expected = window.CellsOf(g, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        if (cells.Range != expected)
        {
            return $"weights of {shard} hold cells {Describe(cells.Range)}; it owns {Describe(expected)}";
        }

        if (cells.Values is null || cells.Values.LongLength != expected.Count)
        {
            return $"weights of {shard} carry {cells.Values?.LongLength} values for {expected.Count} cells";
        }

        int width = expected.CellColEnd - expected.CellColStart;
        for (int c = 0; c < cells.Values.Length; c++)
        {
            float x = cells.Values[c];
            if (!(x >= 0 && x <= Limit))
            {
                return $"weights of {shard} give cell ({expected.CellRowStart + (c / width)}, {expected.CellColStart + (c % width)}) the value {x}, outside [0, 1]";
            }
        }

        return null;
    }

    public static string Describe(WeightsCellRange r) => $"rows [{r.CellRowStart}, {r.CellRowEnd}) × columns [{r.CellColStart}, {r.CellColEnd})";
}
