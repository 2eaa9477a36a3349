using System.Collections.Concurrent;
using System.Diagnostics;

namespace AttentionActors.Actors.TestKit;

/// <summary>A failed expectation of a <see cref="TestProbe"/>.</summary>
public sealed class TestKitAssertionException : Exception
{
    public TestKitAssertionException()
    {
    }

    public TestKitAssertionException(string message)
        : base(message)
    {
    }

    public TestKitAssertionException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// An actor reference that records what it receives, for tests: send from it, then expect
/// replies (<see cref="ExpectMsg{T}"/>), silence (<see cref="ExpectNoMsg"/>), or a message among
/// others (<see cref="FishForMessage{T}"/>), optionally all <see cref="Within"/> a time limit.
/// </summary>
public sealed class TestProbe : ActorRefBase, IWatchable
{
    private readonly BlockingCollection<(object Message, IActorRef Sender)> queue = [];
    private readonly Lock gate = new();
    private readonly HashSet<IActorRef> watchers = [];
    private bool stopped;
    private DateTime? end;

    public TestProbe(ActorSystem system, string name = "probe")
    {
        ArgumentNullException.ThrowIfNull(system);
        System = system;
        Path = new ActorPath($"local://{system.Name}", $"{name}-{Guid.NewGuid():N}");
    }

    public ActorSystem System { get; }

    public override ActorPath Path { get; }

    /// <summary>Timeout of an expectation that names none (inside <see cref="Within"/>: the time left).</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The sender of the last message received.</summary>
    public IActorRef LastSender { get; private set; } = NoSender.Instance;

    public override void Tell(object message, IActorRef? sender = null) => queue.Add((message, sender ?? NoSender.Instance));

    /// <summary>Sends <paramref name="message"/> to <paramref name="target"/> with this probe as the sender.</summary>
    public void Send(IActorRef target, object message)
    {
        ArgumentNullException.ThrowIfNull(target);
        target.Tell(message, this);
    }

    /// <summary>Ends this probe as if it were an actor that stopped: its watchers get <see cref="Terminated"/>.</summary>
    public void Stop()
    {
        List<IActorRef> toNotify;
        lock (gate)
        {
            if (stopped)
            {
                return;
            }

            stopped = true;
            toNotify = [.. watchers];
        }

        toNotify.ForEach(w => ActorCell.DeliverTerminated(w, this));
    }

    void IWatchable.AddWatcher(IActorRef watcher)
    {
        lock (gate)
        {
            if (!stopped)
            {
                watchers.Add(watcher);
                return;
            }
        }

        ActorCell.DeliverTerminated(watcher, this);
    }

    void IWatchable.RemoveWatcher(IActorRef watcher)
    {
        lock (gate)
        {
            watchers.Remove(watcher);
        }
    }

    /// <summary>Makes this probe receive <see cref="Terminated"/> when <paramref name="actor"/> stops.</summary>
    public void Watch(IActorRef actor) => ActorCell.Watch(actor, this);

    /// <summary>Expects the next message to be a <typeparamref name="T"/> (matching <paramref name="predicate"/>).</summary>
    public T ExpectMsg<T>(TimeSpan? timeout = null, Func<T, bool>? predicate = null)
    {
        var limit = Remaining(timeout);
        if (!queue.TryTake(out var item, limit))
        {
            throw new TestKitAssertionException($"{Path.Name}: expected {typeof(T).Name} within {limit.TotalMilliseconds:F0} ms but got nothing");
        }

        LastSender = item.Sender;
        if (item.Message is not T typed)
        {
            throw new TestKitAssertionException($"{Path.Name}: expected {typeof(T).Name} but got {item.Message}");
        }

        if (predicate is not null && !predicate(typed))
        {
            throw new TestKitAssertionException($"{Path.Name}: {item.Message} does not satisfy the expectation");
        }

        return typed;
    }

    /// <summary>Expects no message for <paramref name="duration"/>.</summary>
    public void ExpectNoMsg(TimeSpan duration)
    {
        if (queue.TryTake(out var item, duration))
        {
            LastSender = item.Sender;
            throw new TestKitAssertionException($"{Path.Name}: expected no message for {duration.TotalMilliseconds:F0} ms but got {item.Message}");
        }
    }

    /// <summary>Skips messages until one is a <typeparamref name="T"/> that <paramref name="isTarget"/> accepts, and returns it.</summary>
    public T FishForMessage<T>(Func<T, bool> isTarget, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(isTarget);
        var stopwatch = Stopwatch.StartNew();
        var limit = Remaining(timeout);
        var skipped = new List<object>();
        while (true)
        {
            var left = limit - stopwatch.Elapsed;
            if (left <= TimeSpan.Zero || !queue.TryTake(out var item, left))
            {
                throw new TestKitAssertionException($"{Path.Name}: no matching {typeof(T).Name} within {limit.TotalMilliseconds:F0} ms; skipped [{string.Join(", ", skipped)}]");
            }

            LastSender = item.Sender;
            if (item.Message is T typed && isTarget(typed))
            {
                return typed;
            }

            skipped.Add(item.Message);
        }
    }

    /// <summary>Runs <paramref name="body"/>, whose expectations share the time <paramref name="max"/>, and fails if it takes longer.</summary>
    public void Within(TimeSpan max, Action body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var outer = end;
        var stopwatch = Stopwatch.StartNew();
        end = DateTime.UtcNow + max;
        try
        {
            body();
        }
        finally
        {
            end = outer;
        }

        if (stopwatch.Elapsed > max)
        {
            throw new TestKitAssertionException($"{Path.Name}: block took {stopwatch.Elapsed.TotalMilliseconds:F0} ms, more than the {max.TotalMilliseconds:F0} ms allowed");
        }
    }

    private TimeSpan Remaining(TimeSpan? timeout)
    {
        if (timeout is { } given)
        {
            return given;
        }

        if (end is { } deadline)
        {
            var left = deadline - DateTime.UtcNow;
            return left > TimeSpan.Zero ? left : TimeSpan.Zero;
        }

        return DefaultTimeout;
    }

    public override string ToString() => Path.ToString();
}
