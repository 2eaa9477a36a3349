using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;

namespace AttentionActors.Pipeline.Planning;

/// <summary>The one place a job's pass picks its planner: attention (and layer) jobs, coverage passes and weights passes.</summary>
public static class JobPlanner
{
    /// <summary>Plans <paramref name="geometry"/>'s pass for <paramref name="workers"/> workers.</summary>
    public static ShardPlan Plan(AttentionGeometry geometry, int workers, PlanOptions options)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        return geometry.Pass switch
        {
            JobPass.Coverage => CoveragePlanner.Plan(geometry, workers, options),
            JobPass.Weights => WeightsPlanner.Plan(geometry, workers, options),
            _ => ShardPlanner.Plan(geometry, workers, options),
        };
    }

    /// <summary>
    /// Bytes of what a shard sends back (float32): an attention shard's partials, (m, l, o) per tree
    /// node of the blocks its rows see and per row; a coverage shard's sums, one per subtree and key;
    /// a weights shard's cells. What a reducer holds of a shard until its rows are finished.
    /// </summary>
    public static long ResultBytes(AttentionGeometry g, Shard s)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(s);
        switch (g.Pass)
        {
            case JobPass.Weights:
                return 4L * g.Weights!.CellsOf(g, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd).Count;
            case JobPass.Coverage:
                var (leafStart, leafEnd) = Inspection.CoverageLeafRange(g, s.Head, s.RowStart, s.RowCount);
                return 4L * CanonicalTree.Decompose(leafStart, leafEnd).Length * g.KeysIn(s.BlockStart, s.BlockEnd);
            default:
                return 4L * g.ResultNodes(s.Batch, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd).Length * s.RowCount * (g.PartialWidth + 2L);
        }
    }
}
