using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// The trust boundary for partials: a shard's partial set must be exactly what the canonical
/// computation of that shard produces — the maximal aligned tree nodes of the blocks its rows see,
/// in order, or the root when it holds every block they see; one (m, l, o) per node and row — and
/// hold only numbers a real computation can give.
/// Anything else is a failed shard attempt: covering too little would silently drop keys.
/// </summary>
internal static class PartialCheck
{
    /// <summary>Relative slack on l ≤ (visible keys in the node): each term e^(s − m) ≤ 1, summed in float32.</summary>
    private const double SumSlack = 1e-3;

    /// <summary>
    /// Why <paramref name="set"/> cannot be merged as the partials of <paramref name="shard"/>, or null when it can.
    /// With an explicit mask, <paramref name="maskBlocks"/> tells which nodes a row attends at all.
    /// </summary>
    public static string? Invalid(AttentionGeometry g, Shard shard, PartialSet set, MaskBlocks? maskBlocks = null)
    {
        if (set.Rows != shard.RowCount || set.ValueDim != g.PartialWidth)
        {
            return $"partials of {shard} hold {set.Rows} rows × {set.ValueDim} values, expected {shard.RowCount} × {g.PartialWidth}";
        }

        var (first, end) = g.VisibleBlocks(shard.Batch, shard.RowStart, shard.RowCount);
        var expected = AttentionGeometry.ResultNodes(g.BlockCount, (first, end), shard.BlockStart, shard.BlockEnd);
        if (!set.Nodes.AsSpan().SequenceEqual(expected))
        {
            return $"partials of {shard} hold tree nodes [{string.Join(", ", set.Nodes)}], but its rows see blocks [{first}, {end}), for which the shard's canonical nodes are [{string.Join(", ", expected)}]";
        }

        for (int r = 0; r < set.Rows; r++)
        {
            var (lo, hi) = g.VisibleKeys(shard.Batch, shard.RowStart + r);
            for (int n = 0; n < expected.Length; n++)
            {
                long keyStart = expected[n].Start * g.BlockSize;
                long keyEnd = Math.Min(expected[n].End * g.BlockSize, g.KeySeq);
                long visible = Math.Max(0, Math.Min(hi, keyEnd) - Math.Max(lo, keyStart));
                int at = (n * set.Rows) + r;
                float m = set.M[at], l = set.L[at];
                if (visible > 0 && maskBlocks is not null && !maskBlocks.SeesAny(shard.Batch, shard.Head, shard.RowStart + r, (int)expected[n].Start, (int)expected[n].End))
                {
                    visible = 0;
                }

                if (visible == 0)
                {
                    if (!(float.IsNegativeInfinity(m) && l == 0))
                    {
                        return $"partials of {shard} hold (m, l) = ({m}, {l}) for row {shard.RowStart + r} in {expected[n]}, where the row sees no key; expected the identity (−∞, 0)";
                    }

                    continue;
                }

                if (!float.IsFinite(m) || Math.Abs(m) > AttentionProblem.MaxLogit || !(l >= 1) || l > visible * (1 + SumSlack))
                {
                    return $"partials of {shard} hold (m, l) = ({m}, {l}) for row {shard.RowStart + r} in {expected[n]}, where the row sees {visible} keys (needs finite m and 1 ≤ l ≤ {visible})";
                }

                var o = set.RowO(n, r);
                for (int c = 0; c < o.Length; c++)
                {
                    if (!float.IsFinite(o[c]))
                    {
                        return $"partials of {shard} hold o = {o[c]} for row {shard.RowStart + r}, value {c} in {expected[n]}";
                    }
                }
            }
        }

        return null;
    }
}
