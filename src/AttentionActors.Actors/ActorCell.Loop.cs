using Microsoft.Extensions.Logging;

namespace AttentionActors.Actors;

internal sealed partial class ActorCell
{
    /// <summary>The cell whose handler runs on this thread (so a Tell to itself never blocks).</summary>
    private static readonly AsyncLocal<ActorCell?> CurrentCell = new();

    private async Task RunLoop(bool dedicated)
    {
        CurrentCell.Value = this;
        if (!CreateInstance(null))
        {
            return;
        }

        while (!terminated)
        {
            if (system.Reader.TryRead(out var signal))
            {
                HandleSystem(signal);
                continue;
            }

            if (user.Reader.TryRead(out var envelope))
            {
                Invoke(envelope);
                Interlocked.Decrement(ref pending);
                continue;
            }

            var systemReady = system.Reader.WaitToReadAsync();
            var userReady = user.Reader.WaitToReadAsync();
            if (systemReady.IsCompleted || userReady.IsCompleted)
            {
                continue;
            }

            var any = Task.WhenAny(systemReady.AsTask(), userReady.AsTask());
            if (dedicated)
            {
                any.Wait();
            }
            else
            {
                await any.ConfigureAwait(false);
            }
        }
    }

    private bool CreateInstance(Exception? restartCause)
    {
        try
        {
            ActorBase.Constructing = this;
            try
            {
                actor = Props.Factory();
            }
            finally
            {
                ActorBase.Constructing = null;
            }

            actor.Attach(this);
            if (restartCause is null)
            {
                actor.PreStart();
            }
            else
            {
                actor.PostRestart(restartCause);
            }

            return true;
        }
        catch (Exception ex)
        {
            LogStartFailed(Log, Path, ex);
            System.EventStream.Publish(new ActorFailed(this, null, ex, Directive.Stop));
            StopSelf();
            return false;
        }
    }

    private void Invoke(Envelope envelope)
    {
        currentSender = envelope.Sender;
        if (envelope.Message is PoisonPill)
        {
            StopSelf();
            return;
        }

        try
        {
            if (!actor!.Dispatch(envelope.Message))
            {
                actor.Unhandled(envelope.Message);
            }
        }
        catch (Exception ex)
        {
            HandleFailure(ex, envelope.Message);
        }
        finally
        {
            currentSender = NoSender.Instance;
        }
    }

    private void HandleSystem(object signal)
    {
        switch (signal)
        {
            case StopSignal:
                StopSelf();
                break;
            case Watch watch:
                watchers.Add(watch.Watcher);
                break;
            case Unwatch unwatch:
                watchers.Remove(unwatch.Watcher);
                break;
            case WatchedTerminated t:
                Invoke(new Envelope(new Terminated(t.Actor), t.Actor));
                break;
            case ChildTerminated child:
                lock (gate)
                {
                    children.Remove(child.Child.Path.Name[(Path.Name.Length + 1)..]);
                }

                break;
            case Failed failed:
                HandleFailure(failed.Cause, failed.Message);
                break;
        }
    }

    /// <summary>Applies the supervisor's directive to a handler failure of this actor.</summary>
    private void HandleFailure(Exception cause, object? message)
    {
        var strategy = ParentCell?.Props.SupervisorStrategy ?? System.GuardianStrategy;
        var directive = strategy.Decider(cause);
        if (directive == Directive.Restart)
        {
            var now = DateTime.UtcNow;
            while (restarts.Count > 0 && now - restarts.Peek() > strategy.Window)
            {
                restarts.Dequeue();
            }

            if (restarts.Count >= strategy.MaxRestarts)
            {
                directive = Directive.Stop;
            }
            else
            {
                restarts.Enqueue(now);
            }
        }

        LogFailed(Log, Path, message?.GetType().Name ?? "(start)", directive, cause);
        System.EventStream.Publish(new ActorFailed(this, message, cause, directive));
        switch (directive)
        {
            case Directive.Resume:
                break;
            case Directive.Restart:
                try
                {
                    actor?.PreRestart(cause, message);
                }
                catch (Exception ex)
                {
                    LogStartFailed(Log, Path, ex);
                }

                CreateInstance(cause);
                break;
            case Directive.Escalate:
                StopSelf();
                if (ParentCell is { } parent)
                {
                    parent.SendSystem(new Failed(this, cause, message));
                }

                break;
            default:
                StopSelf();
                break;
        }
    }

    /// <summary>Stops children, runs PostStop, rejects what is left in the mailbox and tells watchers.</summary>
    private void StopSelf()
    {
        List<ActorCell> toStop;
        List<IActorRef> toNotify;
        lock (gate)
        {
            if (terminated)
            {
                return;
            }

            terminated = true;
            toStop = [.. children.Values];
            toNotify = [.. watchers];
        }

        foreach (var child in toStop)
        {
            child.SendSystem(StopSignal.Instance);
        }

        try
        {
            actor?.PostStop();
        }
        catch (Exception ex)
        {
            LogStartFailed(Log, Path, ex);
        }

        user.Writer.TryComplete();
        while (user.Reader.TryRead(out var left))
        {
            Interlocked.Decrement(ref pending);
            if (left.Message is not PoisonPill)
            {
                System.DeadLetter(left.Message, left.Sender, this, System.IsTerminated ? "actor system terminated" : "actor stopped");
            }
        }

        system.Writer.TryComplete();
        foreach (var watcher in toNotify)
        {
            Deliver(watcher, new WatchedTerminated(this));
        }

        ParentCell?.SendSystem(new ChildTerminated(this));
        System.Unregister(this);
        stopped.TrySetResult();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Actor} failed handling {MessageType}; supervisor decided {Directive}")]
    private static partial void LogFailed(ILogger logger, ActorPath actor, string messageType, Directive directive, Exception cause);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Actor} failed to start or stop cleanly")]
    private static partial void LogStartFailed(ILogger logger, ActorPath actor, Exception cause);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Actor} escalated a failure after its supervisor stopped")]
    private static partial void LogEscalationLost(ILogger logger, ActorPath actor, Exception cause);
}

internal readonly record struct Envelope(object Message, IActorRef Sender);

internal sealed record StopSignal
{
    public static readonly StopSignal Instance = new();
}

internal sealed record Watch(IActorRef Watcher);

internal sealed record Unwatch(IActorRef Watcher);

internal sealed record WatchedTerminated(IActorRef Actor);

internal sealed record ChildTerminated(ActorCell Child);

internal sealed record Failed(ActorCell Child, Exception Cause, object? Message);
