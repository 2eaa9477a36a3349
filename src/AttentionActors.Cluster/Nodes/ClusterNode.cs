using System.Diagnostics;
using AttentionActors.Actors;
using AttentionActors.Cluster.Transport;
using AttentionActors.Cluster.Wire;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace AttentionActors.Cluster;

/// <summary>
/// One node of a cluster: an actor system joined to the broker, playing any of the roles.
/// A coordinator node takes jobs (<see cref="JobHost"/>) and watches the dead-letter queue; a
/// reducer node runs the reducer; a worker node runs <see cref="NodeOptions.Threads"/> workers fed
/// from the work queue. Stopping hands back nothing it has started: running shards are finished and
/// answered (up to the shutdown timeout), waiting ones go back to the queue.
/// </summary>
public sealed partial class ClusterNode : IAsyncDisposable
{
    private readonly ActorSystem system;
    private readonly NodeTransport transport;
    private readonly NodeOptions options;
    private readonly ILogger logger;
    private readonly List<IChannel> channels = [];
    private IActorRef? feed;
    private IChannel? workChannel;
    private string? workConsumer;

    private ClusterNode(ActorSystem system, NodeTransport transport, NodeOptions options, ILogger logger)
    {
        this.system = system;
        this.transport = transport;
        this.options = options;
        this.logger = logger;
    }

    public string Name => system.Name;

    /// <summary>The broker URL with its password hidden.</summary>
    public string Broker => transport.Broker.Describe;

    /// <summary>Joins the broker and starts the node's roles; throws <see cref="BrokerUnreachableException"/> if the broker cannot be reached in time.</summary>
    public static async Task<ClusterNode> StartAsync(NodeOptions options, BrokerOptions broker, ILoggerFactory loggers, CancellationToken cancellationToken = default)
    {
        options.Validate();
        broker.Validate();
        string name = options.ResolveName();
        var logger = loggers.CreateLogger("AttentionActors.Cluster");
        var system = ActorSystem.Create(name, loggers);
        var stats = new NodeStats();
        long started = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string simd = Lanes.Resolve(options.KernelPath).ToString();
        bool worker = options.Has(NodeRoles.Worker);
        NodeHeartbeat Beat() => new(name, options.Roles, Environment.MachineName, Environment.ProcessId, simd, worker ? options.Threads : 0, started, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), stats.ShardsDone, stats.InFlight, false, stats.EndedJobs);

        NodeTransport transport;
        try
        {
            transport = await NodeTransport.StartAsync(system, broker, Beat, broadcasts: worker, trackMembership: true, logger, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await system.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        var node = new ClusterNode(system, transport, options, logger);
        try
        {
            if (options.Has(NodeRoles.Reducer))
            {
                system.ActorOf(Props.Create(() => new Reducer(broker.MaxMessageBytes)) with { MailboxCapacity = 1 << 16 }, "reducer");
            }

            if (options.Has(NodeRoles.Coordinator))
            {
                system.ActorOf(Props.Create(() => new JobHost(transport, options, stats, logger)) with { MailboxCapacity = 1 << 16 }, JobHost.ActorName);
                await node.WatchDeadLettersAsync(cancellationToken).ConfigureAwait(false);
            }

            if (worker)
            {
                await node.StartWorkersAsync(stats, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            await node.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        string roles = string.Join(',', options.Roles);
        LogStarted(logger, name, roles, node.Broker, simd, worker ? options.Threads : 0);
        return node;
    }

    /// <summary>Stops taking shards, answers the running ones (up to the shutdown timeout), says goodbye, and disconnects.</summary>
    public async Task StopAsync()
    {
        if (feed is not null && workChannel is not null && workConsumer is not null)
        {
            try
            {
                await workChannel.BasicCancelAsync(workConsumer).ConfigureAwait(false);
                await feed.Ask<Drained>(new Drain(), options.ShutdownTimeout).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is TimeoutException or RabbitMQ.Client.Exceptions.AlreadyClosedException or OperationCanceledException)
            {
                LogDrainIncomplete(logger, Name, ex.Message);
            }
        }

        await system.TerminateAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        await transport.StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        LogStopped(logger, Name);
    }

    public async ValueTask DisposeAsync()
    {
        await system.DisposeAsync().ConfigureAwait(false);
        foreach (var channel in channels)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }

        await transport.DisposeAsync().ConfigureAwait(false);
    }

    private async Task StartWorkersAsync(NodeStats stats, CancellationToken cancellationToken)
    {
        workChannel = await transport.Broker.CreateConsumeChannelAsync(cancellationToken).ConfigureAwait(false);
        channels.Add(workChannel);
        var channel = workChannel;
        var queue = system.ActorOf(Props.Create(() => new WorkFeed(transport, channel, stats, logger)) with { MailboxCapacity = 1 << 16 }, WorkFeed.ActorName);
        feed = queue;
        var compute = FaultInjection.Wrap(Worker.Kernel(options.KernelPath), options.Fault, logger);
        var projections = new ProjectionCaches();
        for (int w = 0; w < options.Threads; w++)
        {
            system.ActorOf(Props.Create(() => new Worker(queue, compute, Worker.Coverage(options.KernelPath), projections, Worker.Weights(options.KernelPath))), $"worker-{w}");
        }

        // Hear the coordinators first: their heartbeats name the jobs that ended before this node joined.
        await Task.Delay(transport.Broker.Options.HeartbeatInterval * 1.5, cancellationToken).ConfigureAwait(false);
        workConsumer = await WorkFeed.ConsumeAsync(transport, workChannel, queue, options.Threads, logger, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Shards the work queue gave up on (delivered <see cref="BrokerOptions.DeliveryLimit"/> times,
    /// never answered) land in the dead-letter queue; their coordinators fail those jobs at once.
    /// </summary>
    private async Task WatchDeadLettersAsync(CancellationToken cancellationToken)
    {
        var channel = await transport.Broker.CreateConsumeChannelAsync(cancellationToken).ConfigureAwait(false);
        channels.Add(channel);
        await channel.BasicQosAsync(0, 4, false, cancellationToken).ConfigureAwait(false);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, delivery) =>
        {
            if (transport.Accept(delivery.Body.Span, delivery.BasicProperties.Type) is { Message: ComputeShard work })
            {
                long deliveries = DeliveryCount(delivery.BasicProperties.Headers) ?? transport.Broker.Options.DeliveryLimit + 1;
                LogPoisoned(logger, work.Job.Value, work.Shard.Id, work.Attempt, deliveries);
                work.Coordinator.Tell(new ShardPoisoned(work.Job, work.Shard.Id, work.Attempt, deliveries), NoSender.Instance);
            }
            else
            {
                LogDeadDropped(logger, delivery.Body.Length);
            }

            await channel.BasicAckAsync(delivery.DeliveryTag, false).ConfigureAwait(false);
        };
        await channel.BasicConsumeAsync(transport.Topology.DeadQueue, autoAck: false, consumer, cancellationToken).ConfigureAwait(false);
    }

    private static long? DeliveryCount(IDictionary<string, object?>? headers)
        => headers is not null && headers.TryGetValue("x-delivery-count", out var count) && count is long or int ? Convert.ToInt64(count, System.Globalization.CultureInfo.InvariantCulture) : null;

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node} up: roles {Roles}, broker {Broker}, SIMD {Simd}, {Threads} worker threads")]
    private static partial void LogStarted(ILogger logger, string node, string roles, string broker, string simd, int threads);

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node} stopped")]
    private static partial void LogStopped(ILogger logger, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "node {Node} stopped before its running shards were answered: {Reason}; the broker hands them to other workers")]
    private static partial void LogDrainIncomplete(ILogger logger, string node, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "job {Job}: shard {ShardId} attempt {Attempt} dead-lettered after {Deliveries} deliveries")]
    private static partial void LogPoisoned(ILogger logger, string job, int shardId, int attempt, long deliveries);

    [LoggerMessage(Level = LogLevel.Warning, Message = "dropped a {Bytes}-byte dead-lettered message that is not a valid shard")]
    private static partial void LogDeadDropped(ILogger logger, int bytes);
}

/// <summary>Faults a worker can inject for tests of the cluster's fault handling (<see cref="NodeOptions.Fault"/>).</summary>
internal static partial class FaultInjection
{
    public static ShardComputer Wrap(ShardComputer compute, string? fault, ILogger logger)
    {
        if (fault is null)
        {
            return compute;
        }

        if (fault == "flip-bit")
        {
            // A machine that returns plausible wrong numbers: the lowest bit of the first o that counts.
            return (input, shard, attempt, ct) =>
            {
                var partials = compute(input, shard, attempt, ct);
                int first = Array.FindIndex(partials.M, float.IsFinite);
                if (first >= 0)
                {
                    ref float o = ref partials.O[first * partials.ValueDim];
                    o = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(o) ^ 1);
                }

                return partials;
            };
        }

        float poison = float.Parse(fault["exit-on-value=".Length..], System.Globalization.CultureInfo.InvariantCulture);
        return (input, shard, attempt, ct) =>
        {
            if (input.Q.Span.Contains(poison))
            {
                LogKilling(logger, shard.Id, poison);
                Process.GetCurrentProcess().Kill();
            }

            return compute(input, shard, attempt, ct);
        };
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "injected fault: shard {ShardId} holds {Value}; killing this worker process")]
    private static partial void LogKilling(ILogger logger, int shardId, float value);
}
