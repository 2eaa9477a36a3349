using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Actors;

/// <summary>What a graceful shutdown did: whether every mailbox emptied, how many messages were rejected, and whether every actor stopped in time.</summary>
public sealed record ShutdownReport(bool Drained, int Rejected, bool AllStopped = true);

/// <summary>
/// Hosts actors: creates them, supervises the top-level ones, schedules timed messages, carries
/// the event stream and dead letters, and shuts everything down gracefully.
/// </summary>
public sealed partial class ActorSystem : IAsyncDisposable
{
    private readonly ConcurrentDictionary<ActorPath, ActorCell> cells = new();
    private readonly ConcurrentBag<Func<ActorPath, IActorRef?>> resolvers = [];
    private readonly TaskCompletionSource terminated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource stopping = new();
    private int deadLetterCount;
    private int rejectedAtShutdown;
    private volatile bool isTerminated;
    private int terminating;

    private ActorSystem(string name, ILoggerFactory? loggerFactory, TimeProvider? timeProvider, SupervisorStrategy? guardianStrategy)
    {
        Name = name;
        Logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("AttentionActors.Actors");
        Time = timeProvider ?? TimeProvider.System;
        Scheduler = new Scheduler(Time);
        GuardianStrategy = guardianStrategy ?? SupervisorStrategy.Default;
        EventStream = new EventStream();
        DeadLetters = new DeadLetterRef(this);
    }

    public string Name { get; }

    public Scheduler Scheduler { get; }

    /// <summary>The clock of the scheduler and of every actor that measures time (tests pass a manual one).</summary>
    public TimeProvider Time { get; }

    public EventStream EventStream { get; }

    /// <summary>Where undeliverable messages go; each is published as a <see cref="DeadLetter"/>.</summary>
    public IActorRef DeadLetters { get; }

    /// <summary>Dead letters so far.</summary>
    public int DeadLetterCount => Volatile.Read(ref deadLetterCount);

    public bool IsTerminated => isTerminated;

    /// <summary>Cancelled when shutdown starts stopping actors: long handlers should pass it on and give up.</summary>
    public CancellationToken Stopping => stopping.Token;

    public Task WhenTerminated => terminated.Task;

    internal ILogger Logger { get; }

    internal SupervisorStrategy GuardianStrategy { get; }

    /// <summary>Creates an actor system. <paramref name="guardianStrategy"/> supervises top-level actors (default: restart, 10 a minute).</summary>
    public static ActorSystem Create(string name, ILoggerFactory? loggerFactory = null, TimeProvider? timeProvider = null, SupervisorStrategy? guardianStrategy = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return new ActorSystem(name, loggerFactory, timeProvider, guardianStrategy);
    }

    /// <summary>Creates a top-level actor with a unique name.</summary>
    public IActorRef ActorOf(Props props, string name)
    {
        ArgumentNullException.ThrowIfNull(props);
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (isTerminated)
        {
            throw new InvalidOperationException($"actor system {Name} is terminated");
        }

        var cell = new ActorCell(this, props, name, null);
        if (!cells.TryAdd(cell.Path, cell))
        {
            throw new InvalidOperationException($"an actor named {name} already exists in {Name}");
        }

        cell.Start();
        return cell;
    }

    /// <summary>
    /// Graceful shutdown: lets every mailbox drain for up to <paramref name="drainTimeout"/>, then
    /// stops all actors; messages still queued (or sent afterwards) go to dead letters and are
    /// counted in the report.
    /// </summary>
    public async Task<ShutdownReport> TerminateAsync(TimeSpan? drainTimeout = null, CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref terminating, 1) == 1)
        {
            await terminated.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return new ShutdownReport(true, Volatile.Read(ref rejectedAtShutdown));
        }

        var deadline = DateTime.UtcNow + (drainTimeout ?? TimeSpan.FromSeconds(5));
        bool drained;
        while (!(drained = cells.Values.All(c => c.Pending == 0)) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5, cancellationToken).ConfigureAwait(false);
        }

        int before = DeadLetterCount;
        isTerminated = true;
        await stopping.CancelAsync().ConfigureAwait(false);
        var all = cells.Values.ToList();
        foreach (var cell in all.Where(c => c.ParentCell is null))
        {
            cell.SendSystem(StopSignal.Instance);
        }

        // A handler that ignores Stopping keeps its actor alive; report that instead of hanging.
        var allStopped = Task.WhenAll(all.Select(c => c.Stopped));
        bool stoppedInTime = await Task.WhenAny(allStopped, Task.Delay(TimeSpan.FromSeconds(30), cancellationToken)).ConfigureAwait(false) == allStopped;
        Volatile.Write(ref rejectedAtShutdown, DeadLetterCount - before);
        terminated.TrySetResult();
        return new ShutdownReport(drained, Volatile.Read(ref rejectedAtShutdown), stoppedInTime);
    }

    public async ValueTask DisposeAsync()
    {
        await TerminateAsync(TimeSpan.Zero).ConfigureAwait(false);
        stopping.Dispose();
    }

    /// <summary>
    /// Adds a way to reach actors at addresses that are not in this process (a cluster transport):
    /// it returns a reference for a path it serves, or null.
    /// </summary>
    public void AddResolver(Func<ActorPath, IActorRef?> resolver)
    {
        ArgumentNullException.ThrowIfNull(resolver);
        resolvers.Add(resolver);
    }

    /// <summary>
    /// The reference for <paramref name="path"/>: a live local actor, or what a transport's resolver
    /// gives for a remote address; false when neither knows it.
    /// </summary>
    public bool TryResolve(ActorPath path, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IActorRef? actor)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (cells.TryGetValue(path, out var cell))
        {
            actor = cell;
            return true;
        }

        foreach (var resolver in resolvers)
        {
            if (resolver(path) is { } found)
            {
                actor = found;
                return true;
            }
        }

        actor = null;
        return false;
    }

    internal void Register(ActorCell cell) => cells[cell.Path] = cell;

    internal void Unregister(ActorCell cell) => cells.TryRemove(cell.Path, out _);

    internal void DeadLetter(object message, IActorRef sender, IActorRef recipient, string reason)
        => DeadLetters.Tell(new DeadLetter(message, sender, recipient, reason), sender);

    private sealed partial class DeadLetterRef(ActorSystem system) : ActorRefBase
    {
        public override ActorPath Path { get; } = new($"local://{system.Name}", "deadLetters");

        public override void Tell(object message, IActorRef? sender = null)
        {
            var letter = message as DeadLetter ?? new DeadLetter(message, sender ?? NoSender.Instance, this, "sent to dead letters");
            Interlocked.Increment(ref system.deadLetterCount);
            LogDeadLetter(system.Logger, letter.Message.GetType().Name, letter.Recipient.Path, letter.Reason);
            system.EventStream.Publish(letter);
        }

        [LoggerMessage(Level = LogLevel.Debug, Message = "dead letter {MessageType} to {Recipient}: {Reason}")]
        private static partial void LogDeadLetter(ILogger logger, string messageType, ActorPath recipient, string reason);
    }
}

/// <summary>Publish/subscribe of system events (dead letters, failures) by message type.</summary>
public sealed class EventStream
{
    private readonly ConcurrentDictionary<(IActorRef, Type), bool> subscriptions = new();

    public void Subscribe(IActorRef subscriber, Type messageType) => subscriptions[(subscriber, messageType)] = true;

    public void Unsubscribe(IActorRef subscriber, Type messageType) => subscriptions.TryRemove((subscriber, messageType), out _);

    public void Publish(object message)
    {
        ArgumentNullException.ThrowIfNull(message);
        foreach (var (subscriber, type) in subscriptions.Keys)
        {
            if (type.IsInstanceOfType(message))
            {
                subscriber.Tell(message, NoSender.Instance);
            }
        }
    }
}
