namespace AttentionActors.Kernels.Tests;

public sealed class ThreadClockTests
{
    /// <summary>Spins until the calling thread's clock has counted <paramref name="work"/> (bounded by 30 s of wall time, should the clock never move); returns what it counted.</summary>
    private static TimeSpan Spin(TimeSpan work)
    {
        var start = ThreadClock.Now()!.Value;
        var wall = System.Diagnostics.Stopwatch.StartNew();
        double sink = 0;
        while (ThreadClock.Now()!.Value - start < work && wall.Elapsed < TimeSpan.FromSeconds(30))
        {
            for (int i = 0; i < 1000; i++)
            {
                sink += Math.Sqrt(i + sink);
            }
        }

        GC.KeepAlive(sink);
        return ThreadClock.Now()!.Value - start;
    }

    [Fact]
    public void The_thread_clock_counts_the_threads_own_work_and_not_its_waiting()
    {
        // These machines run Linux, which offers the clock: the speed probe relies on it.
        Assert.True(OperatingSystem.IsLinux());
        Assert.NotNull(ThreadClock.Now());

        // This thread blocks while another one works 100 ms of its own CPU time: a wall clock (or a
        // process clock) would count that work here too.
        using var done = new ManualResetEvent(false);
        TimeSpan other = default;
        var worker = new Thread(() =>
        {
            other = Spin(TimeSpan.FromMilliseconds(100));
            done.Set();
        });
        var before = ThreadClock.Now()!.Value;
        worker.Start();
        done.WaitOne();
        var waited = ThreadClock.Now()!.Value - before;
        worker.Join();
        Assert.True(other >= TimeSpan.FromMilliseconds(100), $"the working thread's clock counted {other.TotalMilliseconds:F1} ms");
        Assert.True(waited < TimeSpan.FromMilliseconds(50), $"the waiting thread's clock advanced {waited.TotalMilliseconds:F1} ms while another thread worked {other.TotalMilliseconds:F1} ms");

        // Working, its own clock advances by what it works, and never faster than the wall.
        var wall = System.Diagnostics.Stopwatch.StartNew();
        var worked = Spin(TimeSpan.FromMilliseconds(20));
        Assert.True(worked >= TimeSpan.FromMilliseconds(20) && worked <= wall.Elapsed + TimeSpan.FromMilliseconds(1), $"the thread's clock counted {worked.TotalMilliseconds:F1} ms of work in {wall.Elapsed.TotalMilliseconds:F1} ms of wall time");
    }
}
