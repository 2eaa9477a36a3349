namespace AttentionActors.Kernels.Tests;

public sealed class ThreadClockTests
{
    [Fact]
    public void The_thread_clock_counts_the_threads_work_and_not_its_waiting()
    {
        // These machines run Linux, which offers the clock: the speed probe relies on it.
        Assert.True(OperatingSystem.IsLinux());
        var before = ThreadClock.Now();
        Assert.NotNull(before);

        // Asleep, the thread runs nothing: a wall clock would count the whole 200 ms.
        Thread.Sleep(200);
        var slept = ThreadClock.Now()!.Value - before!.Value;
        Assert.True(slept < TimeSpan.FromMilliseconds(50), $"the thread's clock advanced {slept.TotalMilliseconds:F1} ms while it slept 200 ms");

        // Working, it advances: spin until it has counted 20 ms (a clock that never moved would spin forever, so bound the wait by wall time).
        var start = ThreadClock.Now()!.Value;
        var wall = System.Diagnostics.Stopwatch.StartNew();
        double sink = 0;
        while (ThreadClock.Now()!.Value - start < TimeSpan.FromMilliseconds(20) && wall.Elapsed < TimeSpan.FromSeconds(30))
        {
            for (int i = 0; i < 1000; i++)
            {
                sink += Math.Sqrt(i + sink);
            }
        }

        var worked = ThreadClock.Now()!.Value - start;
        Assert.True(worked >= TimeSpan.FromMilliseconds(20) && worked <= wall.Elapsed + TimeSpan.FromMilliseconds(1), $"the thread's clock counted {worked.TotalMilliseconds:F1} ms of work in {wall.Elapsed.TotalMilliseconds:F1} ms of wall time (sink {sink})");
    }
}
