using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Actors;

/// <summary>
/// A local actor: its bounded user mailbox, an unbounded system mailbox that always goes first
/// (stop, watch, failures of children), the current instance, and the loop that processes one
/// message at a time.
/// </summary>
internal sealed partial class ActorCell : ActorRefBase, IActorContext
{
    private readonly Channel<Envelope> user;
    private readonly Channel<object> system = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dictionary<string, ActorCell> children = [];
    private readonly HashSet<IActorRef> watchers = [];
    private readonly Queue<DateTime> restarts = new();
    private readonly Lock gate = new();
    private readonly TaskCompletionSource stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ActorBase? actor;
    private IActorRef currentSender = NoSender.Instance;
    private int pending;
    private volatile bool terminated;
    private Thread? loopThread;

    public ActorCell(ActorSystem actorSystem, Props props, string name, ActorCell? parent)
    {
        System = actorSystem;
        Props = props;
        ParentCell = parent;
        Path = new ActorPath($"local://{actorSystem.Name}", parent is null ? name : $"{parent.Path.Name}/{name}");
        user = Channel.CreateBounded<Envelope>(new BoundedChannelOptions(Math.Max(1, props.MailboxCapacity))
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public override ActorPath Path { get; }

    public Props Props { get; }

    public ActorCell? ParentCell { get; }

    public ActorSystem System { get; }

    public IActorRef Self => this;

    public IActorRef Sender => currentSender;

    public IActorRef Parent => (IActorRef?)ParentCell ?? NoSender.Instance;

    public bool IsTerminated => terminated;

    /// <summary>Messages enqueued but not yet processed (for draining at shutdown).</summary>
    public int Pending => Volatile.Read(ref pending);

    public Task Stopped => stopped.Task;

    private ILogger Log => System.Logger;

    public void Start()
    {
        if (Props.DedicatedThread)
        {
            loopThread = new Thread(() => RunLoop(dedicated: true).GetAwaiter().GetResult())
            {
                IsBackground = true,
                Name = Path.Name,
            };
            loopThread.Start();
        }
        else
        {
            _ = Task.Run(() => RunLoop(dedicated: false));
        }
    }

    public override void Tell(object message, IActorRef? sender = null)
    {
        ArgumentNullException.ThrowIfNull(message);
        sender ??= NoSender.Instance;
        if (terminated || System.IsTerminated)
        {
            System.DeadLetter(message, sender, this, System.IsTerminated ? "actor system terminated" : "actor stopped");
            return;
        }

        var envelope = new Envelope(message, sender);
        Interlocked.Increment(ref pending);
        if (user.Writer.TryWrite(envelope))
        {
            return;
        }

        // Full mailbox: back-pressure the sender, up to the push timeout. An actor telling itself
        // cannot wait for its own loop, so that message is rejected at once.
        bool written = false;
        if (Thread.CurrentThread != loopThread && !ReferenceEquals(CurrentCell.Value, this))
        {
            using var timeout = new CancellationTokenSource(Props.PushTimeout);
            try
            {
                user.Writer.WriteAsync(envelope, timeout.Token).AsTask().GetAwaiter().GetResult();
                written = true;
            }
            catch (OperationCanceledException)
            {
            }
            catch (ChannelClosedException)
            {
            }
        }

        if (!written)
        {
            Interlocked.Decrement(ref pending);
            System.DeadLetter(message, sender, this, $"mailbox full ({Props.MailboxCapacity} messages)");
        }
    }

    /// <summary>Like <see cref="Tell"/> but waits for mailbox space asynchronously.</summary>
    public async ValueTask TellAsync(object message, IActorRef? sender = null, CancellationToken cancellationToken = default)
    {
        sender ??= NoSender.Instance;
        if (terminated || System.IsTerminated)
        {
            System.DeadLetter(message, sender, this, "actor stopped");
            return;
        }

        Interlocked.Increment(ref pending);
        try
        {
            await user.Writer.WriteAsync(new Envelope(message, sender), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException)
        {
            Interlocked.Decrement(ref pending);
            System.DeadLetter(message, sender, this, ex is ChannelClosedException ? "actor stopped" : "send cancelled");
            if (ex is OperationCanceledException)
            {
                throw;
            }
        }
    }

    public void SendSystem(object message)
    {
        if (message is Watch watch)
        {
            lock (gate)
            {
                if (!terminated)
                {
                    system.Writer.TryWrite(message);
                    return;
                }
            }

            Deliver(watch.Watcher, new WatchedTerminated(this));
            return;
        }

        if (!system.Writer.TryWrite(message) && message is Failed failed)
        {
            LogEscalationLost(Log, Path, failed.Cause);
        }
    }

    public IActorRef ActorOf(Props props, string name)
    {
        var child = new ActorCell(System, props, name, this);
        lock (gate)
        {
            if (!children.TryAdd(name, child))
            {
                throw new InvalidOperationException($"{Path} already has a child named {name}");
            }
        }

        System.Register(child);
        child.Start();
        return child;
    }

    public void Watch(IActorRef actor) => Watch(actor, this);

    public void Unwatch(IActorRef actor)
    {
        if (actor is not ActorCell && actor is IWatchable watchable)
        {
            watchable.RemoveWatcher(this);
            return;
        }

        Local(actor, "unwatch").SendSystem(new Unwatch(this));
    }

    public void Stop(IActorRef actor) => Local(actor, "stop").SendSystem(StopSignal.Instance);

    /// <summary>Makes <paramref name="watcher"/> receive <see cref="Terminated"/> when <paramref name="actor"/> stops: a local actor, or any <see cref="IWatchable"/>.</summary>
    internal static void Watch(IActorRef actor, IActorRef watcher)
    {
        if (actor is not ActorCell && actor is IWatchable watchable)
        {
            watchable.AddWatcher(watcher);
            return;
        }

        Local(actor, "watch").SendSystem(new Watch(watcher));
    }

    /// <summary>
    /// The local cell behind <paramref name="actor"/>, or a loud refusal: death watch and stop of
    /// other references need their transport's own support (<see cref="IWatchable"/>), and silently
    /// doing nothing would leave a watcher waiting for a <see cref="Terminated"/> that never comes.
    /// </summary>
    internal static ActorCell Local(IActorRef actor, string what)
    {
        ArgumentNullException.ThrowIfNull(actor);
        return actor as ActorCell
            ?? throw new NotSupportedException($"cannot {what} {actor.Path}: it is not an actor of this process (a {actor.GetType().Name}), and only local actors support {what}");
    }

    public ICancelable ScheduleTellOnce(TimeSpan delay, object message) => System.Scheduler.ScheduleTellOnce(delay, this, message, this);

    /// <summary>Tells <paramref name="watcher"/> that <paramref name="ended"/> has stopped: a system message to a local actor, else <see cref="Terminated"/>.</summary>
    internal static void DeliverTerminated(IActorRef watcher, IActorRef ended) => Deliver(watcher, new WatchedTerminated(ended));

    private static void Deliver(IActorRef target, object systemMessage)
    {
        if (target is ActorCell cell)
        {
            cell.SendSystem(systemMessage);
        }
        else if (systemMessage is WatchedTerminated t)
        {
            target.Tell(new Terminated(t.Actor), t.Actor);
        }
    }
}
