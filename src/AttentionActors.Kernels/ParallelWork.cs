namespace AttentionActors.Kernels;

/// <summary>Runs items 0..count−1 on a fixed number of threads that pull the next item as they finish.</summary>
internal static class ParallelWork
{
    public static void Run(int count, int threads, Action<int> body, CancellationToken cancellationToken)
    {
        if (threads <= 0)
        {
            threads = Environment.ProcessorCount;
        }

        threads = Math.Max(1, Math.Min(threads, count));
        int next = -1;
        Exception? failure = null;

        void Loop()
        {
            try
            {
                int item;
                while (Volatile.Read(ref failure) is null && (item = Interlocked.Increment(ref next)) < count)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    body(item);
                }
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref failure, ex, null);
            }
        }

        var helpers = new Thread[threads - 1];
        for (int t = 0; t < helpers.Length; t++)
        {
            helpers[t] = new Thread(Loop) { IsBackground = true, Name = $"attention-{t + 1}" };
            helpers[t].Start();
        }

        Loop();
        foreach (var thread in helpers)
        {
            thread.Join();
        }

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }
}
