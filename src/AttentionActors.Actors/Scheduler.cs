namespace AttentionActors.Actors;

/// <summary>Something scheduled that can still be called off.</summary>
public interface ICancelable
{
    bool IsCancellationRequested { get; }

    void Cancel();
}

/// <summary>Timed delivery of messages, on the system's <see cref="TimeProvider"/>.</summary>
public sealed class Scheduler
{
    private readonly TimeProvider time;

    internal Scheduler(TimeProvider time) => this.time = time;

    public ICancelable ScheduleTellOnce(TimeSpan delay, IActorRef receiver, object message, IActorRef? sender = null)
    {
        ArgumentNullException.ThrowIfNull(receiver);
        var item = new Scheduled();
        item.Timer = time.CreateTimer(_ =>
        {
            if (!item.IsCancellationRequested)
            {
                receiver.Tell(message, sender);
            }

            item.Timer?.Dispose();
        }, null, delay < TimeSpan.Zero ? TimeSpan.Zero : delay, Timeout.InfiniteTimeSpan);
        return item;
    }

    public ICancelable ScheduleTellRepeatedly(TimeSpan initialDelay, TimeSpan interval, IActorRef receiver, object message, IActorRef? sender = null)
    {
        ArgumentNullException.ThrowIfNull(receiver);
        var item = new Scheduled();
        item.Timer = time.CreateTimer(_ =>
        {
            if (!item.IsCancellationRequested)
            {
                receiver.Tell(message, sender);
            }
        }, null, initialDelay, interval);
        return item;
    }

    private sealed class Scheduled : ICancelable
    {
        private int cancelled;

        public ITimer? Timer { get; set; }

        public bool IsCancellationRequested => Volatile.Read(ref cancelled) != 0;

        public void Cancel()
        {
            Interlocked.Exchange(ref cancelled, 1);
            Timer?.Dispose();
        }
    }
}
