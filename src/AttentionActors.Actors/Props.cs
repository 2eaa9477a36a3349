namespace AttentionActors.Actors;

/// <summary>How to create an actor and the settings of its mailbox. Immutable.</summary>
public sealed record Props
{
    private Props(Func<ActorBase> factory) => Factory = factory;

    /// <summary>Creates a fresh instance; called again on every restart.</summary>
    public Func<ActorBase> Factory { get; }

    /// <summary>Bounded mailbox size; a sender blocks (back-pressure) when it is full. Default 1024.</summary>
    public int MailboxCapacity { get; init; } = 1024;

    /// <summary>How long a <see cref="IActorRef.Tell"/> to a full mailbox waits before the message goes to dead letters. Default 10 s.</summary>
    public TimeSpan PushTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Run the actor on a thread of its own (for actors whose handlers compute for long). Default false.</summary>
    public bool DedicatedThread { get; init; }

    /// <summary>How this actor supervises its children; default <see cref="SupervisorStrategy.Default"/>.</summary>
    public SupervisorStrategy? SupervisorStrategy { get; init; }

    public static Props Create<T>(Func<T> factory)
        where T : ActorBase
    {
        ArgumentNullException.ThrowIfNull(factory);
        return new Props(factory);
    }
}
