namespace AttentionActors.Actors;

/// <summary>
/// Where an actor lives: <c>local://system/name</c> in this process, or a remote address a
/// transport resolves (cluster mode). Actors only ever see <see cref="IActorRef"/>s, so the
/// same actor code runs embedded and across machines.
/// </summary>
public sealed record ActorPath(string Address, string Name)
{
    public bool IsLocal => Address.StartsWith("local://", StringComparison.Ordinal);

    public override string ToString() => $"{Address}/{Name}";
}

/// <summary>A handle to an actor: the only way to talk to it.</summary>
public interface IActorRef
{
    ActorPath Path { get; }

    /// <summary>
    /// Enqueues <paramref name="message"/>; never waits for it to be processed. When the mailbox is
    /// full the caller blocks until there is room (back-pressure), up to the mailbox's push timeout.
    /// </summary>
    void Tell(object message, IActorRef? sender = null);

    /// <summary>Like <see cref="Tell"/> but waits for mailbox room without blocking a thread.</summary>
    ValueTask TellAsync(object message, IActorRef? sender = null, CancellationToken cancellationToken = default)
    {
        Tell(message, sender);
        return ValueTask.CompletedTask;
    }
}

/// <summary>The sender of messages sent from outside any actor.</summary>
public sealed class NoSender : IActorRef
{
    public static readonly NoSender Instance = new();

    private NoSender()
    {
    }

    public ActorPath Path { get; } = new("local://none", "no-sender");

    public void Tell(object message, IActorRef? sender = null)
    {
    }

    public override string ToString() => "no-sender";
}

/// <summary>Stops an actor after the messages already in its mailbox.</summary>
public sealed record PoisonPill
{
    public static readonly PoisonPill Instance = new();
}

/// <summary>Delivered to a watcher when a watched actor has stopped.</summary>
public sealed record Terminated(IActorRef Actor);

/// <summary>A reply that carries a failure; <see cref="ActorRefExtensions.Ask{T}"/> rethrows it.</summary>
public sealed record StatusFailure(Exception Cause);
