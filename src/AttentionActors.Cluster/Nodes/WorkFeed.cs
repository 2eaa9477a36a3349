using AttentionActors.Actors;
using AttentionActors.Cluster.Transport;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace AttentionActors.Cluster;

/// <summary>A shard the work queue delivered under <paramref name="Tag"/>, decoded and checked.</summary>
internal sealed record WorkDelivered(ulong Tag, ComputeShard Work);

/// <summary>Command: stop taking shards; reply <see cref="Drained"/> once the running ones are answered.</summary>
internal sealed record Drain;

/// <summary>Reply to <see cref="Drain"/>.</summary>
internal sealed record Drained;

/// <summary>
/// A worker node's end of the work queue, in the place of the in-process queue: the node's workers
/// ask it for shards (<see cref="WorkerReady"/>) exactly as in one process, and it hands each a
/// delivery from RabbitMQ. A delivery is acknowledged only when its worker asks for the next one —
/// after the shard's partial (or failure) has been published and confirmed — so a worker that dies
/// mid-shard leaves the shard unacknowledged and the broker gives it to another worker. A job's
/// end (broadcast) drops its waiting deliveries and interrupts its running shards.
/// </summary>
internal sealed partial class WorkFeed : ActorBase
{
    /// <summary>The feed's actor name on every worker node; broadcasts are addressed to it.</summary>
    public const string ActorName = "queue";

    private const ulong DirectTag = 0;

    private readonly NodeTransport transport;
    private readonly IChannel channel;
    private readonly ILogger logger;
    private readonly LinkedList<WorkDelivered> pending = new();
    private readonly LinkedList<IActorRef> idle = new();
    private readonly Dictionary<IActorRef, ulong> busy = [];
    private readonly HashSet<IActorRef> workers = [];
    private readonly EndedJobs ended = new();
    private readonly NodeStats stats;
    private IActorRef? drainRequester;

    public WorkFeed(NodeTransport transport, IChannel channel, NodeStats stats, ILogger logger)
    {
        this.transport = transport;
        this.channel = channel;
        this.stats = stats;
        this.logger = logger;
        Receive<WorkerReady>(_ => OnReady(Sender));
        Receive<WorkDelivered>(delivered =>
        {
            if (Ended(delivered.Work) || drainRequester is not null)
            {
                Settle(delivered.Tag, requeue: drainRequester is not null && !Ended(delivered.Work));
                return;
            }

            pending.AddLast(delivered);
            Dispatch();
        });
        // Sent straight to this node, not through the queue (an audit's second computation): nothing to acknowledge.
        Receive<ComputeShard>(work =>
        {
            pending.AddLast(new WorkDelivered(DirectTag, work));
            Dispatch();
        });
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            for (var node = pending.First; node is not null;)
            {
                var next = node.Next;
                if (node.Value.Work.Job == end.Job)
                {
                    pending.Remove(node);
                    Settle(node.Value.Tag, requeue: false);
                }

                node = next;
            }

            foreach (var worker in workers)
            {
                worker.Tell(end, Self);
            }
        });
        Receive<Terminated>(t =>
        {
            workers.Remove(t.Actor);
            idle.Remove(t.Actor);
            if (busy.Remove(t.Actor, out ulong tag))
            {
                Settle(tag, requeue: true);
                stats.InFlight = busy.Count;
            }
        });
        Receive<Drain>(_ =>
        {
            drainRequester = Sender;
            foreach (var waiting in pending)
            {
                Settle(waiting.Tag, requeue: true);
            }

            pending.Clear();
            MaybeDrained();
        });
    }

    /// <summary>Consumes the work queue, one unacknowledged shard per worker, feeding <paramref name="feed"/>.</summary>
    public static async Task<string> ConsumeAsync(NodeTransport transport, IChannel channel, IActorRef feed, int workers, ILogger logger, CancellationToken cancellationToken = default)
    {
        await channel.BasicQosAsync(0, (ushort)Math.Clamp(workers, 1, ushort.MaxValue), false, cancellationToken).ConfigureAwait(false);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, delivery) =>
        {
            if (transport.Accept(delivery.Body.Span, delivery.BasicProperties.Type) is { Message: ComputeShard work })
            {
                if (delivery.Redelivered)
                {
                    LogRedelivered(logger, work.Job.Value, work.Shard.Id, work.Attempt);
                }

                await feed.TellAsync(new WorkDelivered(delivery.DeliveryTag, work), feed).ConfigureAwait(false);
                return;
            }

            // Not a shard, or not a valid one: to the dead-letter queue, never to a worker.
            LogRejected(logger, delivery.DeliveryTag);
            await channel.BasicRejectAsync(delivery.DeliveryTag, requeue: false).ConfigureAwait(false);
        };
        return await channel.BasicConsumeAsync(transport.Topology.WorkQueue, autoAck: false, consumer, cancellationToken).ConfigureAwait(false);
    }

    private void OnReady(IActorRef worker)
    {
        if (workers.Add(worker))
        {
            Context.Watch(worker);
        }

        if (busy.Remove(worker, out ulong tag))
        {
            stats.InFlight = busy.Count;
            stats.ShardDone();

            // The worker has sent its answer (partial or failure) already; ack once the broker confirms it.
            Settle(tag, requeue: false);
        }

        if (!idle.Contains(worker))
        {
            idle.AddLast(worker);
        }

        Dispatch();
        MaybeDrained();
    }

    private void Dispatch()
    {
        while (drainRequester is null && pending.First is { } work && idle.First is { } worker)
        {
            pending.RemoveFirst();
            if (Ended(work.Value.Work))
            {
                Settle(work.Value.Tag, requeue: false);
                continue;
            }

            idle.RemoveFirst();
            busy[worker.Value] = work.Value.Tag;
            stats.InFlight = busy.Count;
            worker.Value.Tell(work.Value.Work, Self);
        }
    }

    /// <summary>Whether the shard's job is over: its end was broadcast, or its coordinator's heartbeat lists it (this node joined later).</summary>
    private bool Ended(ComputeShard work) => ended.Contains(work.Job) || transport.Membership.HasEnded(work.Job.Value);

    /// <summary>Acknowledges a delivery (after everything published before it is confirmed), or hands it back to the queue.</summary>
    private void Settle(ulong tag, bool requeue)
    {
        if (tag == DirectTag)
        {
            return;
        }

        var ch = channel;
        transport.Outbox.AfterConfirmed(() => requeue
            ? ch.BasicNackAsync(tag, multiple: false, requeue: true).AsTask()
            : ch.BasicAckAsync(tag, multiple: false).AsTask());
    }

    private void MaybeDrained()
    {
        if (drainRequester is not null && busy.Count == 0)
        {
            // The acks queued so far go out with the outbox's final flush when the node stops.
            drainRequester.Tell(new Drained(), Self);
            drainRequester = NoSender.Instance;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job}: shard {ShardId} attempt {Attempt} redelivered (its previous worker went away without answering)")]
    private static partial void LogRedelivered(ILogger logger, string job, int shardId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "work queue delivery {Tag} is not a valid shard; dead-lettered")]
    private static partial void LogRejected(ILogger logger, ulong tag);
}
