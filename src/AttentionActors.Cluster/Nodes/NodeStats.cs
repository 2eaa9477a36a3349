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

    private const int EndedKept = 256;
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> ended = new();

    /// <summary>The most recently ended jobs of this coordinator, oldest first.</summary>
    public IReadOnlyList<string> EndedJobs => [.. ended];

    public void JobEnded(string job)
    {
        ended.Enqueue(job);
        while (ended.Count > EndedKept)
        {
            ended.TryDequeue(out _);
        }
    }
}
