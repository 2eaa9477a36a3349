namespace AttentionActors.Pipeline.Planning;

/// <summary>Planner settings; defaults in brackets.</summary>
public sealed record PlanOptions
{
    /// <summary>
    /// Largest shard, counting Q rows, K/V blocks and the partials it returns, in bytes [16 MiB].
    /// Smaller shards cost more than their count: a shard whose key range is not one aligned
    /// subtree returns several partials per row, written into fresh memory and merged again (at
    /// N = 16384, H = 8, d = 64 causal, 8 MiB shards ran at 0.56× the kernel alone, 16 MiB at 0.84×).
    /// </summary>
    public long MaxShardBytes { get; init; } = 16L << 20;

    /// <summary>
    /// Whether workers take K/V from their node's block store, a chunk of at most half the budget at
    /// a time [false]. Then a shard's keys are not bounded by the budget — only its rows, its
    /// partials and one chunk are — so shards span whole rows of keys and return one partial per
    /// row; keys are cut only where rows cannot be (a cluster's attention jobs without an explicit mask).
    /// </summary>
    public bool KeysFromStore { get; init; }

    /// <summary>Target for busiest-worker load over the mean [1.05].</summary>
    public double MaxImbalance { get; init; } = 1.05;

    /// <summary>Fewest query rows a row split may leave [16].</summary>
    public int MinRows { get; init; } = 16;

    /// <summary>Most shards a plan may hold [65536].</summary>
    public int MaxShards { get; init; } = 65536;

    /// <summary>Most shards a plan may ever hold: the coordinator tracks each one [16 M].</summary>
    public const int ShardsCeiling = 1 << 24;
}
