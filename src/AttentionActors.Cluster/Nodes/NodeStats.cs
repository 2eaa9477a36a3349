namespace AttentionActors.Cluster;

/// <summary>Counters a node reports in its heartbeats.</summary>
internal sealed class NodeStats
{
    private long shardsDone;
    private int inFlight;

    public long ShardsDone => Interlocked.Read(ref shardsDone);

    public int InFlight
    {
        get => Volatile.Read(ref inFlight);
        set => Volatile.Write(ref inFlight, value);
    }

    public void ShardDone() => Interlocked.Increment(ref shardsDone);
}
