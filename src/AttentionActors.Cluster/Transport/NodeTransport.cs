using AttentionActors.Actors;
using AttentionActors.Cluster.Wire;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace AttentionActors.Cluster.Transport;

/// <summary>
/// Connects one node's actor system to the cluster: actors on other nodes appear as
/// <see cref="ClusterRef"/>s (telling one publishes to that node's inbox), the node's inbox is
/// consumed and each message checked, decoded and told to its local actor, and heartbeats go out
/// and (for nodes that track membership) come in. Malformed, oversized, wrong-version and misaddressed
/// messages are logged and dropped; they never reach an actor.
/// </summary>
internal sealed partial class NodeTransport : IAsyncDisposable
{
    /// <summary>Target node of messages to every worker (broadcast) or to any worker (the work queue).</summary>
    public const string AnyNode = "*";

    private readonly ActorSystem system;
    private readonly ILogger logger;
    private readonly Func<NodeHeartbeat> heartbeat;
    private readonly bool broadcasts;
    private readonly bool trackMembership;
    private IChannel? inbox;
    private IChannel? beatsIn;
    private IChannel? beatsOut;
    private ITimer? heartbeatTimer;
    private int beating;
    private long receivedBytes;

    private NodeTransport(ActorSystem system, BrokerConnection broker, Func<NodeHeartbeat> heartbeat, bool broadcasts, bool trackMembership, ILogger logger)
    {
        this.system = system;
        Broker = broker;
        this.heartbeat = heartbeat;
        this.broadcasts = broadcasts;
        this.trackMembership = trackMembership;
        this.logger = logger;
        Node = system.Name;
        Topology = new Topology(broker.Options.Prefix, broker.Options.DeliveryLimit);
        Codec = new WireCodec(Resolve);
        Outbox = new Outbox(broker, logger);
        Membership = new Membership(TimeProvider.System, broker.Options.NodeTimeout);
        system.AddResolver(path => path.Address.StartsWith("node://", StringComparison.Ordinal) ? Resolve(new ActorAddress(path.Address["node://".Length..], path.Name)) : null);
    }

    public string Node { get; }

    public BrokerConnection Broker { get; }

    public Topology Topology { get; }

    public WireCodec Codec { get; }

    public Outbox Outbox { get; }

    public Membership Membership { get; }

    public long ReceivedBytes => Interlocked.Read(ref receivedBytes);

    /// <summary>
    /// Connects, declares the shared topology and this node's inbox, and starts consuming and sending
    /// heartbeats. The inbox takes broadcasts when <paramref name="broadcasts"/> (worker nodes: a job's
    /// end) and every node's heartbeats when <paramref name="trackMembership"/> (coordinators, reducers, clients).
    /// </summary>
    public static async Task<NodeTransport> StartAsync(ActorSystem system, BrokerOptions options, Func<NodeHeartbeat> heartbeat, bool broadcasts, bool trackMembership, ILogger logger, CancellationToken cancellationToken = default)
    {
        var broker = await BrokerConnection.ConnectAsync(options, system.Name, logger, cancellationToken).ConfigureAwait(false);
        var transport = new NodeTransport(system, broker, heartbeat, broadcasts, trackMembership, logger);
        try
        {
            await transport.StartInboxAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return transport;
    }

    /// <summary>The reference for an actor address: a live local actor, or a <see cref="ClusterRef"/>.</summary>
    public IActorRef Resolve(ActorAddress address)
        => address.Node == Node && system.TryResolve(new ActorPath($"local://{Node}", address.Name), out var local) && local.Path.IsLocal
            ? local
            : new ClusterRef(this, address);

    /// <summary>Publishes a message to an actor on another node (or this one, by its address).</summary>
    public Task Send(ActorAddress target, object message, IActorRef? sender)
    {
        if (target.Node == Node && system.TryResolve(new ActorPath($"local://{Node}", target.Name), out var local) && local.Path.IsLocal)
        {
            local.Tell(message, sender);
            return Task.CompletedTask;
        }

        return Outbox.Send(Topology.Nodes, target.Node, message, target, sender, mandatory: true);
    }

    /// <summary>Puts a shard on the durable work queue, persistent, for whichever worker takes it.</summary>
    public Task Enqueue(ComputeShard work, IActorRef? sender)
        => Outbox.Send("", Topology.WorkQueue, work, new ActorAddress(AnyNode, WorkFeed.ActorName), sender, persistent: true);

    /// <summary>Tells every worker node (their work feeds).</summary>
    public Task Broadcast(object message, IActorRef? sender)
        => Outbox.Send(Topology.Broadcast, "", message, new ActorAddress(AnyNode, WorkFeed.ActorName), sender);

    /// <summary>Sends the last heartbeat (leaving), publishes what is queued, and closes the connections.</summary>
    public async Task StopAsync(TimeSpan flushTimeout)
    {
        heartbeatTimer?.Dispose();
        await Outbox.FlushAsync(flushTimeout).ConfigureAwait(false);
        await PublishBeatAsync(heartbeat() with { Leaving = true }).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        heartbeatTimer?.Dispose();
        await Outbox.DisposeAsync().ConfigureAwait(false);
        foreach (var channel in new[] { inbox, beatsIn, beatsOut })
        {
            if (channel is not null)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
            }
        }

        await Broker.DisposeAsync().ConfigureAwait(false);
    }

    private async Task StartInboxAsync(CancellationToken cancellationToken)
    {
        var channel = await Broker.CreateConsumeChannelAsync(cancellationToken).ConfigureAwait(false);
        inbox = channel;
        await Topology.DeclareSharedAsync(channel, cancellationToken).ConfigureAwait(false);
        try
        {
            await Topology.DeclareInboxAsync(channel, Node, broadcasts, cancellationToken).ConfigureAwait(false);
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 405)
        {
            throw new BrokerUnreachableException($"node name '{Node}' is already taken on broker {Broker.Describe} (its inbox queue is held by another connection); give this node another --name", ex);
        }

        // Messages are acknowledged once they are in an actor's mailbox: a few in flight keep the mailbox fed without hoarding 8 MiB bodies.
        await channel.BasicQosAsync(0, 16, false, cancellationToken).ConfigureAwait(false);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += OnInboxAsync;
        await channel.BasicConsumeAsync(Topology.Inbox(Node), autoAck: false, consumer, cancellationToken).ConfigureAwait(false);

        // Heartbeats travel apart from data, both ways: behind a queue of 8 MiB shards a live node would look dead.
        if (trackMembership)
        {
            beatsIn = await Broker.CreateConsumeChannelAsync(cancellationToken).ConfigureAwait(false);
            await Topology.DeclareBeatsAsync(beatsIn, Node, Broker.Options.NodeTimeout, cancellationToken).ConfigureAwait(false);
            var beats = new AsyncEventingBasicConsumer(beatsIn);
            beats.ReceivedAsync += (_, delivery) =>
            {
                if (Accept(delivery.Body.Span, delivery.BasicProperties.Type) is { Message: NodeHeartbeat beat })
                {
                    Membership.Observe(beat);
                }

                return Task.CompletedTask;
            };
            await beatsIn.BasicConsumeAsync(Topology.Beats(Node), autoAck: true, beats, cancellationToken).ConfigureAwait(false);
        }

        beatsOut = await Broker.Heartbeats.CreateChannelAsync(null, cancellationToken).ConfigureAwait(false);
        heartbeatTimer = TimeProvider.System.CreateTimer(_ => Beat(), null, TimeSpan.Zero, Broker.Options.HeartbeatInterval);
    }

    private void Beat()
    {
        Membership.Sweep();

        // A heartbeat says "send to me": not while this node's inbox may be missing on the broker.
        if (Broker.InboxReady && Interlocked.Exchange(ref beating, 1) == 0)
        {
            _ = PublishBeatAsync(heartbeat());
        }
    }

    /// <summary>One heartbeat, unconfirmed (the next one follows within an interval); at most one in flight.</summary>
    private async Task PublishBeatAsync(NodeHeartbeat beat)
    {
        try
        {
            var body = WireCodec.Encode(beat, new ActorAddress(AnyNode, "membership"), null);
            await beatsOut!.BasicPublishAsync(Topology.Heartbeats, "", body).AsTask().WaitAsync(Broker.Options.PublishTimeout).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            LogBeatFailed(logger, ex.Message);
        }
        finally
        {
            Volatile.Write(ref beating, 0);
        }
    }

    private async Task OnInboxAsync(object sender, BasicDeliverEventArgs delivery)
    {
        Interlocked.Add(ref receivedBytes, delivery.Body.Length);
        try
        {
            if (Accept(delivery.Body.Span, delivery.BasicProperties.Type) is { } message)
            {
                if (system.TryResolve(new ActorPath($"local://{Node}", message.Target.Name), out var target) && target.Path.IsLocal)
                {
                    await target.TellAsync(message.Message, message.Sender).ConfigureAwait(false);
                }
                else
                {
                    LogNoSuchActor(logger, message.Message.GetType().Name, message.Target.Name);
                }
            }
        }
        finally
        {
            await ((AsyncEventingBasicConsumer)sender).Channel.BasicAckAsync(delivery.DeliveryTag, false).ConfigureAwait(false);
        }
    }

    /// <summary>The decoded message if it is within budget, well formed and addressed to this node; else null, logged.</summary>
    public Delivered? Accept(ReadOnlySpan<byte> body, string? type)
    {
        if (body.Length > Broker.Options.MaxMessageBytes)
        {
            Drop($"a {body.Length:N0}-byte {type} message is over the {Broker.Options.MaxMessageBytes:N0}-byte budget");
            return null;
        }

        Delivered message;
        try
        {
            message = Codec.Decode(body);
        }
        catch (WireFormatException ex)
        {
            Drop(ex.Message);
            return null;
        }

        if (message.Target.Node != Node && message.Target.Node != AnyNode)
        {
            Drop($"a {message.Message.GetType().Name} for node {message.Target.Node} arrived at node {Node}");
            return null;
        }

        return message;
    }

    private void Drop(string why)
    {
        LogDropped(logger, Node, why);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "node {Node} dropped a message: {Why}")]
    private static partial void LogDropped(ILogger logger, string node, string why);

    [LoggerMessage(Level = LogLevel.Warning, Message = "heartbeat not sent: {Reason}")]
    private static partial void LogBeatFailed(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{MessageType} for actor {Name}, which is not (or no longer) on this node")]
    private static partial void LogNoSuchActor(ILogger logger, string messageType, string name);
}
