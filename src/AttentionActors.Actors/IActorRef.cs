namespace AttentionActors.Actors;

/// <summary>
/// Where an actor lives: <c>local://system/name</c> in this process, or a remote address a
/// transport resolves (cluster mode). Actors only ever see <see cref="IActorRef"/>s, so the
/// same actor code runs embedded and across machines.
/// </summary>
public sealed record ActorPath(string Address, string Name)
{
    public bool IsLocal => Address.StartsWith("local://", StringComparison.Ordinal);

    /// <summary>The path <paramref name="text"/> shows (<c>scheme://address/name</c>, the form of <see cref="ToString"/>), or null.</summary>
    public static ActorPath? Parse(string text)
    {
        int scheme = text.IndexOf("://", StringComparison.Ordinal);
        int slash = scheme < 0 ? -1 : text.IndexOf('/', scheme + 3);
        return slash < 0 ? null : new ActorPath(text[..slash], text[(slash + 1)..]);
    }

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

/// <summary>
/// Base of every actor reference: two references are equal when their paths are, whichever
/// object or transport stands behind them (a path resolved twice gives equal references).
/// </summary>
public abstract class ActorRefBase : IActorRef, IEquatable<IActorRef>
{
    public abstract ActorPath Path { get; }

    public abstract void Tell(object message, IActorRef? sender = null);

    public bool Equals(IActorRef? other) => other is not null && Path == other.Path;

    public override bool Equals(object? obj) => obj is IActorRef other && Equals(other);

    public override int GetHashCode() => Path.GetHashCode();

    public override string ToString() => Path.ToString();
}

/// <summary>
/// A reference that supports death watch without being a local actor (a test probe; a remote
/// actor whose transport reports its end): it delivers <see cref="Terminated"/> to each watcher
/// when the actor behind it ends, or at once if it already has.
/// </summary>
public interface IWatchable
{
    void AddWatcher(IActorRef watcher);

    void RemoveWatcher(IActorRef watcher);
}

/// <summary>
/// Marks a message that may cross processes in cluster mode: it carries no exception objects and
/// no in-process references other than <see cref="IActorRef"/>s, and goes through one codec.
/// </summary>
public interface IWireMessage
{
}

/// <summary>The sender of messages sent from outside any actor.</summary>
public sealed class NoSender : ActorRefBase
{
    public static readonly NoSender Instance = new();

    private NoSender()
    {
    }

    public override ActorPath Path { get; } = new("local://none", "no-sender");

    public override void Tell(object message, IActorRef? sender = null)
    {
    }
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
