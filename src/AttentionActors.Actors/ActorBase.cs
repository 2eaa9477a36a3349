namespace AttentionActors.Actors;

/// <summary>What an actor can reach while it handles a message.</summary>
public interface IActorContext
{
    IActorRef Self { get; }

    /// <summary>The sender of the message being handled (<see cref="NoSender"/> from outside).</summary>
    IActorRef Sender { get; }

    IActorRef Parent { get; }

    ActorSystem System { get; }

    IActorRef ActorOf(Props props, string name);

    /// <summary>Delivers <see cref="Terminated"/> when <paramref name="actor"/> stops (at once if it already has).</summary>
    void Watch(IActorRef actor);

    void Unwatch(IActorRef actor);

    void Stop(IActorRef actor);

    /// <summary>Tells <paramref name="message"/> to this actor after <paramref name="delay"/>.</summary>
    ICancelable ScheduleTellOnce(TimeSpan delay, object message);
}

/// <summary>
/// An actor: typed handlers registered with <see cref="Receive{T}(Action{T}, Func{T, bool}?)"/>,
/// processed one message at a time; <see cref="Become"/> swaps in another set of handlers (a state).
/// </summary>
public abstract class ActorBase
{
    private readonly List<(Type Type, Func<object, bool> Handles, Action<object> Handle)> handlers = [];
    private IActorContext? context = Constructing;

    /// <summary>The context of the actor whose constructor is running on this thread (Akka allows Context in constructors).</summary>
    [ThreadStatic]
    internal static IActorContext? Constructing;

    protected IActorContext Context => context ?? throw new InvalidOperationException("an actor's context exists only while the actor system runs it");

    protected IActorRef Self => Context.Self;

    protected IActorRef Sender => Context.Sender;

    internal void Attach(IActorContext actorContext) => context = actorContext;

    /// <summary>Handles messages of type <typeparamref name="T"/> (optionally only those <paramref name="when"/> accepts).</summary>
    protected void Receive<T>(Action<T> handler, Func<T, bool>? when = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        handlers.Add((typeof(T), m => m is T t && (when is null || when(t)), m => handler((T)m)));
    }

    /// <summary>Handles any message not matched by an earlier handler.</summary>
    protected void ReceiveAny(Action<object> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        handlers.Add((typeof(object), _ => true, handler));
    }

    /// <summary>Replaces every handler with those <paramref name="behavior"/> registers: the actor's next state.</summary>
    protected void Become(Action behavior)
    {
        ArgumentNullException.ThrowIfNull(behavior);
        handlers.Clear();
        behavior();
    }

    internal bool Dispatch(object message)
    {
        foreach (var (_, handles, handle) in handlers)
        {
            if (handles(message))
            {
                handle(message);
                return true;
            }
        }

        return false;
    }

    /// <summary>Called before the first message (and after each restart, via <see cref="PostRestart"/>).</summary>
    protected internal virtual void PreStart()
    {
    }

    /// <summary>Called once the actor has stopped for good.</summary>
    protected internal virtual void PostStop()
    {
    }

    /// <summary>Called on the failed instance before it is replaced.</summary>
    protected internal virtual void PreRestart(Exception cause, object? message)
    {
    }

    /// <summary>Called on the fresh instance after a restart; by default runs <see cref="PreStart"/>.</summary>
    protected internal virtual void PostRestart(Exception cause) => PreStart();

    /// <summary>A message no handler took; by default it goes to dead letters (a <see cref="Terminated"/> is ignored).</summary>
    protected internal virtual void Unhandled(object message)
    {
        if (message is not Terminated)
        {
            Context.System.DeadLetters.Tell(new DeadLetter(message, Sender, Self, "unhandled"), Self);
        }
    }
}
