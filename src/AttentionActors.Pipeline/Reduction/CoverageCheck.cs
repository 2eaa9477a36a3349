using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// The trust boundary for coverage subtrees: a coverage shard must return exactly the maximal
/// aligned subtrees of its leaves (<see cref="Inspection.CoverageLeafRange"/>), one sum per node and
/// key of its blocks, each a finite sum of weights: 0 ≤ c ≤ the node's row count.
/// </summary>
internal static class CoverageCheck
{
    /// <summary>Relative slack on c ≤ rows: each weight e^(s − lse) ≤ 1 up to float32 rounding.</summary>
    private const double SumSlack = 1e-3;

    /// <summary>Why <paramref name="parts"/> cannot be merged as the coverage of <paramref name="shard"/>, or null when they can.</summary>
    public static string? Invalid(AttentionGeometry g, Shard shard, CoverageParts parts)
    {
        int keys = g.KeysIn(shard.BlockStart, shard.BlockEnd);
        var (leafStart, leafEnd) = Inspection.CoverageLeafRange(g, shard.Head, shard.RowStart, shard.RowCount);
        var expected = CanonicalTree.Decompose(leafStart, leafEnd);
        if (parts.Keys != keys || parts.Values.LongLength != (long)parts.Nodes.Length * keys)
        {
            return $"coverage of {shard} holds {parts.Values.LongLength} sums over {parts.Keys} keys, expected {parts.Nodes.Length} nodes × {keys} keys";
        }

        if (!parts.Nodes.AsSpan().SequenceEqual(expected))
        {
            return $"coverage of {shard} holds tree nodes [{string.Join(", ", parts.Nodes)}], but its leaves [{leafStart}, {leafEnd}) make [{string.Join(", ", expected)}]";
        }

        for (int n = 0; n < expected.Length; n++)
        {
            double rows = Math.Min(expected[n].End, leafEnd) - expected[n].Start;
            double limit = (rows * g.BlockSize * (1 + SumSlack)) + 1e-6;
            var row = parts.Row(n);
            for (int j = 0; j < row.Length; j++)
            {
                if (!(row[j] >= 0 && row[j] <= limit))
                {
                    return $"coverage of {shard} gives key {(shard.BlockStart * g.BlockSize) + j} the sum {row[j]} in {expected[n]}, outside [0, {limit:G4}]";
                }
            }
        }

        return null;
    }
}
