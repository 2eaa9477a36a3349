using System.Collections.Concurrent;
using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// The projections of layer jobs that the workers of one process share: a head's key blocks and
/// query rows are projected once however many shards need them. A job's entries go when it ends
/// (<see cref="Forget"/>); past <see cref="LimitBytes"/> in all, projections are made and not kept.
/// </summary>
public sealed class ProjectionCaches
{
    private readonly ConcurrentDictionary<JobId, JobCache> jobs = new();
    private long bytes;

    /// <param name="limitBytes">The most all jobs' projections may hold; by default a quarter of the memory the process may use.</param>
    public ProjectionCaches(long? limitBytes = null) => LimitBytes = limitBytes ?? (GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4);

    public long LimitBytes { get; }

    /// <summary>Bytes held now, over every job.</summary>
    public long Bytes => Interlocked.Read(ref bytes);

    public IProjectionCache For(JobId job) => jobs.GetOrAdd(job, _ => new JobCache(this));

    /// <summary>The jobs whose projections are held now (a job that ended must not be among them).</summary>
    public IReadOnlyList<JobId> Jobs => [.. jobs.Keys];

    public void Forget(JobId job)
    {
        if (jobs.TryRemove(job, out var cache))
        {
            Interlocked.Add(ref bytes, -cache.Bytes);
        }
    }

    private sealed class JobCache(ProjectionCaches owner) : IProjectionCache
    {
        private readonly ConcurrentDictionary<ProjectionKey, Lazy<float[]>> entries = new();
        private long bytes;

        public long Bytes => Interlocked.Read(ref bytes);

        public float[] GetOrAdd(ProjectionKey key, Func<float[]> project)
        {
            if (entries.TryGetValue(key, out var held))
            {
                return held.Value;
            }

            if (owner.Bytes >= owner.LimitBytes)
            {
                return project();
            }

            // One thread projects; another worker asking for the same rows meanwhile waits for it. Only
            // the stored Lazy is ever evaluated, so each kept projection is counted once.
            return entries.GetOrAdd(key, _ => new Lazy<float[]>(
                () =>
                {
                    var value = project();
                    long size = (long)value.Length * sizeof(float);
                    Interlocked.Add(ref bytes, size);
                    Interlocked.Add(ref owner.bytes, size);
                    return value;
                },
                LazyThreadSafetyMode.ExecutionAndPublication)).Value;
        }
    }
}
