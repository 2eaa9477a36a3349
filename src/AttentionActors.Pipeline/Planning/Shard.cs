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

