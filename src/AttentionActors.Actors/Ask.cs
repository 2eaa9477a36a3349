namespace AttentionActors.Actors;

/// <summary>Thrown when an <see cref="ActorRefExtensions.Ask{T}"/> gets no reply in time.</summary>
public sealed class AskTimeoutException : TimeoutException
{
    public AskTimeoutException()
    {
    }

    public AskTimeoutException(string message)
        : base(message)
    {
    }

    public AskTimeoutException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

public static class ActorRefExtensions
{
    /// <summary>
    /// Sends <paramref name="message"/> and awaits the first reply of type <typeparamref name="T"/>;
    /// a <see cref="StatusFailure"/> reply is rethrown, silence past <paramref name="timeout"/> throws
    /// <see cref="AskTimeoutException"/>.
    /// </summary>
    public static async Task<T> Ask<T>(this IActorRef target, object message, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        var promise = new PromiseRef(target.Path);
        target.Tell(message, promise);
        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        object reply;
        try
        {
            reply = await promise.Reply.Task.WaitAsync(timeoutSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new AskTimeoutException($"ask of {target.Path} with {message.GetType().Name} got no reply within {timeout.TotalMilliseconds:F0} ms");
        }

        return reply switch
        {
            StatusFailure failure => throw failure.Cause,
            T typed => typed,
            _ => throw new InvalidCastException($"ask of {target.Path} expected {typeof(T).Name} but the reply was {reply.GetType().Name}"),
        };
    }

    /// <summary>A one-shot reference that completes a task with the first message it gets.</summary>
    private sealed class PromiseRef(ActorPath target) : ActorRefBase
    {
        public TaskCompletionSource<object> Reply { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override ActorPath Path { get; } = new("local://temp", $"ask-{target.Name}-{Guid.NewGuid():N}");

        public override void Tell(object message, IActorRef? sender = null) => Reply.TrySetResult(message);
    }
}
