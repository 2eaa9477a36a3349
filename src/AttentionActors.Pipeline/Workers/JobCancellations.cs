using System.Collections.Concurrent;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// Per-node cancellation of jobs: the coordinator trips a failed or cancelled job here, and a
/// worker computing one of its shards gives up at the next query panel instead of finishing work
/// nobody will read. (A token cannot travel in a message; in cluster mode a broadcast trips the
/// entry on every node.)
/// </summary>
public sealed class JobCancellations
{
    private readonly ConcurrentDictionary<JobId, CancellationTokenSource> sources = new();

    /// <summary>The token of <paramref name="job"/>, cancelled once the job ends early.</summary>
    public CancellationToken For(JobId job) => sources.GetOrAdd(job, _ => new CancellationTokenSource()).Token;

    public void Cancel(JobId job) => sources.GetOrAdd(job, _ => new CancellationTokenSource()).Cancel();

    /// <summary>Drops a finished job's entry.</summary>
    public void Forget(JobId job)
    {
        if (sources.TryRemove(job, out var source))
        {
            source.Dispose();
        }
    }
}
