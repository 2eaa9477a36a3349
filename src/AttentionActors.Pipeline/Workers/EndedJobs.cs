namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// The most recent jobs known to have ended, so work for them that is still in flight (a queued
/// duplicate, a late re-issue) is dropped instead of computed. Bounded: the oldest are forgotten
/// first, which at worst costs one wasted shard, never a wrong result.
/// </summary>
internal sealed class EndedJobs(int capacity = EndedJobs.DefaultCapacity)
{
    public const int DefaultCapacity = 4096;

    private readonly HashSet<JobId> set = [];
    private readonly Queue<JobId> order = new();

    public int Count => set.Count;

    public bool Contains(JobId job) => set.Contains(job);

    public void Add(JobId job)
    {
        if (!set.Add(job))
        {
            return;
        }

        order.Enqueue(job);
        if (order.Count > capacity)
        {
            set.Remove(order.Dequeue());
        }
    }
}
