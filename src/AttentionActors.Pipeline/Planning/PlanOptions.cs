namespace AttentionActors.Pipeline.Planning;

/// <summary>Planner settings; defaults in brackets.</summary>
public sealed record PlanOptions
{
    /// <summary>Largest shard, counting Q rows, K/V blocks and the partials it returns, in bytes [8 MiB; a cluster node plans with its Node:MaxShardBytes, 16 MiB].</summary>
    public long MaxShardBytes { get; init; } = 8L << 20;

    /// <summary>Target for busiest-worker load over the mean [1.05].</summary>
    public double MaxImbalance { get; init; } = 1.05;

    /// <summary>Fewest query rows a row split may leave [16].</summary>
    public int MinRows { get; init; } = 16;

    /// <summary>Most shards a plan may hold [65536].</summary>
    public int MaxShards { get; init; } = 65536;

    /// <summary>Most shards a plan may ever hold: the coordinator tracks each one [16 M].</summary>
    public const int ShardsCeiling = 1 << 24;
}
