namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// One unit of work: query rows [RowStart, RowStart + RowCount) of head <see cref="Head"/> in batch
/// <see cref="Batch"/> against key blocks [BlockStart, BlockEnd). <see cref="Pairs"/> counts the
/// visible (query, key) pairs; FLOPs are 2·pairs·(d_k + d_v).
/// </summary>
public sealed record Shard(int Id, int Batch, int Head, int RowStart, int RowCount, int BlockStart, int BlockEnd, long Pairs, double Flops, long Bytes)
{
    public int RowEnd => RowStart + RowCount;

    public override string ToString() => $"shard {Id} (batch {Batch}, head {Head}, rows [{RowStart}, {RowEnd}), key blocks [{BlockStart}, {BlockEnd}))";
}

/// <summary>A job's shards, largest first, and how evenly they spread over the workers.</summary>
/// <param name="Shards">Every shard; together they cover each visible (query, key) pair exactly once.</param>
/// <param name="Workers">The worker count the plan was balanced for.</param>
/// <param name="WorkerLoads">FLOPs per worker when the shards are dealt largest-first to the least-loaded worker.</param>
public sealed record ShardPlan(IReadOnlyList<Shard> Shards, int Workers, IReadOnlyList<double> WorkerLoads)
{
    public double TotalFlops => Shards.Sum(s => s.Flops);

    /// <summary>Busiest worker's load over the mean (1 = perfect).</summary>
    public double Imbalance => WorkerLoads.Count == 0 || TotalFlops == 0 ? 1 : WorkerLoads.Max() / (TotalFlops / Workers);
}

/// <summary>Planner settings; defaults in brackets.</summary>
public sealed record PlanOptions
{
    /// <summary>Largest shard, counting Q rows, K/V blocks and the partials it returns [16 MiB: a RabbitMQ message must stay below it].</summary>
    public long MaxShardBytes { get; init; } = 16L << 20;

    /// <summary>Target for busiest-worker load over the mean [1.05].</summary>
    public double MaxImbalance { get; init; } = 1.05;

    /// <summary>Fewest query rows a row split may leave [16].</summary>
    public int MinRows { get; init; } = 16;

    /// <summary>Most shards a plan may hold [65536].</summary>
    public int MaxShards { get; init; } = 65536;
}
