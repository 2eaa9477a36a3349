using System.Threading.Channels;
using AttentionActors.Actors;
using AttentionActors.Cluster.Wire;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace AttentionActors.Cluster.Transport;

/// <summary>
/// Everything a node publishes goes through one ordered loop on one confirm channel: messages are
/// encoded only when their turn comes (a coordinator may queue thousands of shards that are views
/// of its tensors, not copies), each is checked against the message budget and published in order —
/// so messages from one node to another keep their order (the last rows before the completion
/// notice) — with up to <see cref="Window"/> confirmations outstanding (a quorum queue confirms only
/// after its log is written; waiting for each in turn would idle the workers). An action queued
/// after a message (acking the shard a partial answers) runs only once the broker has confirmed
/// everything before it.
/// </summary>
internal sealed partial class Outbox : IAsyncDisposable
{
    private readonly Channel<Item> items = System.Threading.Channels.Channel.CreateUnbounded<Item>(new UnboundedChannelOptions { SingleReader = true });
    private readonly BrokerConnection broker;
    private readonly ILogger logger;
    private readonly Task loop;
    private const int Window = 4;
    private readonly CancellationTokenSource stop = new();
    private readonly Queue<(Task Confirmed, Publish Item, int Bytes)> inFlight = new();
    private IChannel? channel;
    private long publishedBytes;

    public Outbox(BrokerConnection broker, ILogger logger)
    {
        this.broker = broker;
        this.logger = logger;
        loop = Task.Run(RunAsync);
    }

    public long PublishedBytes => Interlocked.Read(ref publishedBytes);

    /// <summary>
    /// Queues a message for <paramref name="target"/> via <paramref name="exchange"/>; the task completes once the broker
    /// confirms it, or faults. A <paramref name="mandatory"/> message that reaches no queue (the target node's inbox does not
    /// exist: the node is gone or reconnecting) faults with <see cref="UnroutableMessageException"/>.
    /// </summary>
    public Task Send(string exchange, string routingKey, object message, ActorAddress target, IActorRef? sender, bool persistent = false, bool mandatory = false)
    {
        var item = new Publish(exchange, routingKey, message, target, sender, persistent, mandatory, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!items.Writer.TryWrite(item))
        {
            item.Done.TrySetException(new InvalidOperationException("the node is shutting down"));
        }

        return item.Done.Task;
    }

    /// <summary>Runs <paramref name="action"/> once everything queued before it is confirmed.</summary>
    public void AfterConfirmed(Func<Task> action) => items.Writer.TryWrite(new AfterAll(action));

    /// <summary>Publishes what is queued (up to <paramref name="timeout"/>), then stops.</summary>
    public async Task FlushAsync(TimeSpan timeout)
    {
        items.Writer.TryComplete();
        if (await Task.WhenAny(loop, Task.Delay(timeout)).ConfigureAwait(false) != loop)
        {
            await stop.CancelAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        items.Writer.TryComplete();
        await stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped on purpose.
        }

        if (channel is not null)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }

        stop.Dispose();
    }

    private abstract record Item;

    private sealed record Publish(string Exchange, string RoutingKey, object Message, ActorAddress Target, IActorRef? Sender, bool Persistent, bool Mandatory, TaskCompletionSource Done) : Item;

    private sealed record AfterAll(Func<Task> Action) : Item;

    private async Task RunAsync()
    {
        while (await items.Reader.WaitToReadAsync(stop.Token).ConfigureAwait(false))
        {
            while (items.Reader.TryRead(out var item))
            {
                switch (item)
                {
                    case Publish publish:
                        await PublishAsync(publish).ConfigureAwait(false);
                        if (inFlight.Count >= Window)
                        {
                            await ConfirmOldestAsync().ConfigureAwait(false);
                        }

                        break;
                    case AfterAll after:
                        await ConfirmAllAsync().ConfigureAwait(false);
                        try
                        {
                            await after.Action().ConfigureAwait(false);
                        }
                        catch (Exception ex)
                        {
                            LogActionFailed(logger, ex.Message);
                        }

                        break;
                }
            }

            // Nothing more queued: settle what is outstanding, so a sender awaiting its confirmation is never left waiting.
            await ConfirmAllAsync().ConfigureAwait(false);
        }

        await ConfirmAllAsync().ConfigureAwait(false);
    }

    private async Task ConfirmAllAsync()
    {
        while (inFlight.Count > 0)
        {
            await ConfirmOldestAsync().ConfigureAwait(false);
        }
    }

    private async Task ConfirmOldestAsync()
    {
        var (confirmed, item, bytes) = inFlight.Dequeue();
        try
        {
            // No cancellable token on a confirm channel in client 7.1.2 (its semaphore leaks on cancel): bound the wait instead.
            await confirmed.WaitAsync(broker.Options.PublishTimeout, stop.Token).ConfigureAwait(false);
            Interlocked.Add(ref publishedBytes, bytes);
            item.Done.TrySetResult();
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            item.Done.TrySetCanceled();
        }
        catch (PublishException returned) when (returned.IsReturn)
        {
            // Returned unrouted, then confirmed: the channel is sound, only this message went nowhere.
            var unroutable = new UnroutableMessageException(item.Message.GetType().Name, item.Target);
            LogUnroutable(logger, unroutable.Message);
            item.Done.TrySetException(unroutable);
        }
        catch (Exception ex)
        {
            Broken(item, ex);
        }
    }

    private void Broken(Publish item, Exception ex)
    {
        LogPublishFailed(logger, item.Message.GetType().Name, item.Target.ToString(), ex.Message);
        item.Done.TrySetException(ex);

        // A timed-out or failed confirm channel is not reused: the next message opens a fresh one.
        var broken = channel;
        channel = null;
        if (broken is not null)
        {
            _ = broken.DisposeAsync().AsTask().ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    private async Task PublishAsync(Publish item)
    {
        byte[] body;
        try
        {
            body = WireCodec.Encode(item.Message, item.Target, item.Sender);
        }
        catch (Exception ex)
        {
            LogUnsendable(logger, item.Message.GetType().Name, item.Target.ToString(), ex.Message);
            item.Done.TrySetException(ex);
            return;
        }

        if (body.Length > broker.Options.MaxMessageBytes)
        {
            string why = $"{item.Message.GetType().Name} to {item.Target} is {body.Length:N0} bytes, over the {broker.Options.MaxMessageBytes:N0}-byte message budget";
            LogUnsendable(logger, item.Message.GetType().Name, item.Target.ToString(), why);
            item.Done.TrySetException(new InvalidOperationException(why));
            return;
        }

        try
        {
            channel ??= await broker.CreatePublishChannelAsync(stop.Token).ConfigureAwait(false);
            var properties = new BasicProperties { DeliveryMode = item.Persistent ? DeliveryModes.Persistent : DeliveryModes.Transient, Type = item.Message.GetType().Name };

            // Started in order on one channel, so the broker receives them in order; their confirmations are awaited later.
            inFlight.Enqueue((channel.BasicPublishAsync(item.Exchange, item.RoutingKey, item.Mandatory, properties, body).AsTask(), item, body.Length));
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            item.Done.TrySetCanceled();
        }
        catch (Exception ex)
        {
            Broken(item, ex);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "cannot send {MessageType} to {Target}: {Reason}")]
    private static partial void LogUnsendable(ILogger logger, string messageType, string target, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "publishing {MessageType} to {Target} failed: {Reason}")]
    private static partial void LogPublishFailed(ILogger logger, string messageType, string target, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Reason}")]
    private static partial void LogUnroutable(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "an action after confirmation failed: {Reason}")]
    private static partial void LogActionFailed(ILogger logger, string reason);
}
