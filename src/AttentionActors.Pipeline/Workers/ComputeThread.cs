using System.Threading.Channels;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// One long-lived thread that runs a worker's shards, one at a time, off the actor's mailbox loop.
/// Long-lived on purpose: the kernel keeps its workspace and pooled buffers per thread, so a fresh
/// thread per shard would allocate and strand them every time. The worker's stop ends it (<see cref="Complete"/>).
/// </summary>
internal sealed class ComputeThread
{
    private readonly Channel<Action> work = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });

    public ComputeThread(string name) => new Thread(Loop) { IsBackground = true, Name = name }.Start();

    /// <summary>Runs <paramref name="action"/> on the thread, after any action posted before it.</summary>
    public void Post(Action action)
    {
        if (!work.Writer.TryWrite(action))
        {
            throw new InvalidOperationException("the worker's compute thread has ended");
        }
    }

    /// <summary>Lets the thread end after the action it is running (whose token the worker has cancelled).</summary>
    public void Complete() => work.Writer.TryComplete();

    private void Loop()
    {
        var reader = work.Reader;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (reader.TryRead(out var action))
            {
                action();
            }
        }
    }
}
