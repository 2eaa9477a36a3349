namespace AttentionActors.Kernels;

/// <summary>Runs items 0..count−1 on a fixed number of threads (the caller and pool threads) that pull the next item as they finish.</summary>
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

        // Helpers come from the thread pool: starting OS threads costs ~0.1 ms a call, which shows on
        // millisecond-sized problems. The calling thread works too.
        var helpers = new Task[threads - 1];
        for (int t = 0; t < helpers.Length; t++)
        {
            helpers[t] = Task.Factory.StartNew(Loop, CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);
        }

        Loop();
        Task.WaitAll(helpers, CancellationToken.None);

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }
}
