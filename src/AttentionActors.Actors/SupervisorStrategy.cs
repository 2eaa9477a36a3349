namespace AttentionActors.Actors;

/// <summary>What a supervisor does with a child whose handler threw.</summary>
public enum Directive
{
    /// <summary>Drop the failing message and keep the actor's state.</summary>
    Resume,

    /// <summary>Drop the failing message and replace the actor with a fresh instance; the mailbox is kept.</summary>
    Restart,

    /// <summary>Stop the actor; its remaining messages go to dead letters.</summary>
    Stop,

    /// <summary>Stop the actor and fail the supervisor itself with the same exception.</summary>
    Escalate,
}

/// <summary>
/// One-for-one supervision: the decider picks a directive per exception, and a child restarted
/// more than <see cref="MaxRestarts"/> times within <see cref="Window"/> is stopped instead.
/// </summary>
public sealed record SupervisorStrategy(Func<Exception, Directive> Decider, int MaxRestarts = 10, TimeSpan? RestartWindow = null)
{
    /// <summary>Restart on any exception, at most 10 times a minute.</summary>
    public static readonly SupervisorStrategy Default = new(_ => Directive.Restart);

    public TimeSpan Window => RestartWindow ?? TimeSpan.FromMinutes(1);
}

/// <summary>Published on the event stream whenever a handler throws.</summary>
/// <param name="Actor">The failing actor.</param>
/// <param name="Message">The message whose handler threw (dropped).</param>
/// <param name="Cause">The exception.</param>
/// <param name="Decision">What its supervisor did.</param>
public sealed record ActorFailed(IActorRef Actor, object? Message, Exception Cause, Directive Decision);

/// <summary>A message that could not be delivered or processed, with the reason.</summary>
public sealed record DeadLetter(object Message, IActorRef Sender, IActorRef Recipient, string Reason);
