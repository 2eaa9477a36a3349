using AttentionActors.Kernels;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Tests.Workers;

public sealed class ProjectionCachesTests
{
    [Fact]
    public async Task Each_projection_is_made_once_however_many_workers_ask_and_goes_with_its_job()
    {
        var caches = new ProjectionCaches();
        var job = new JobId("layer");
        int made = 0, asking = 0;
        using var everyoneAsked = new ManualResetEventSlim();
        float[] Project()
        {
            Interlocked.Increment(ref made);

            // The projection is still running while all eight ask for it.
            everyoneAsked.Wait(TimeSpan.FromSeconds(30));
            return new float[1000];
        }

        var key = new ProjectionKey('k', 0, 1, 5, 1);
        var asks = Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            if (Interlocked.Increment(ref asking) == 8)
            {
                everyoneAsked.Set();
            }

            return caches.For(job).GetOrAdd(key, Project);
        })).ToArray();
        var results = await Task.WhenAll(asks);
        Assert.Equal(1, made);
        Assert.All(results, r => Assert.Same(results[0], r));
        Assert.Equal(4000, caches.Bytes);

        caches.For(job).GetOrAdd(key with { Part = 'v' }, Project);
        Assert.Equal(2, made);
        Assert.Equal(8000, caches.Bytes);
        caches.Forget(job);
        Assert.Equal(0, caches.Bytes);
        caches.For(job).GetOrAdd(key, Project);
        Assert.Equal(3, made);
    }

    [Fact]
    public void Past_the_limit_projections_are_made_and_not_kept()
    {
        var caches = new ProjectionCaches(limitBytes: 4000);
        var cache = caches.For(new JobId("layer"));
        int made = 0;
        float[] Project()
        {
            made++;
            return new float[1000];
        }

        cache.GetOrAdd(new ProjectionKey('q', 0, 0, 0, 100), Project);
        cache.GetOrAdd(new ProjectionKey('q', 0, 0, 100, 100), Project);
        cache.GetOrAdd(new ProjectionKey('q', 0, 0, 100, 100), Project);
        Assert.Equal(3, made);
        Assert.Equal(4000, caches.Bytes);
        cache.GetOrAdd(new ProjectionKey('q', 0, 0, 0, 100), Project);
        Assert.Equal(3, made);
    }
}
