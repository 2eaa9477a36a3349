using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Akka.Remote.Transport.DotNetty;
using AttentionActors.Cluster.Coordinator;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Cluster.Workers;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Wire;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cluster.Node;

/// <summary>A node that cannot start: its certificates, its ports, or the cluster it was told to join. The message says which.</summary>
public sealed class NodeStartException : Exception
{
    public NodeStartException()
    {
    }

    /// <summary>Whether the cluster downed this node while it waited to see itself Up (it had joined; its process should exit as a downed node does).</summary>
    public bool Downed { get; init; }

    public NodeStartException(string message)
        : base(message)
    {
    }

    public NodeStartException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// One node of a cluster: an Akka.NET actor system joined to the others through its seeds (mutual
/// TLS with the cluster's CA), playing any of the roles, with a data plane of its own for the bytes.
/// A coordinator node runs the work queue and the job host; a reducer node the reducer; a worker node
/// a feed and <see cref="NodeOptions.Threads"/> workers. <see cref="StopAsync"/> leaves gracefully:
/// no new work, running shards answered (up to the shutdown timeout), then out of the cluster.
/// <see cref="Terminated"/> completes when the actor system ends — after a stop, or when the cluster
/// downed this node (a node downed cannot rejoin as the same incarnation; its process should exit
/// for its supervisor to restart it).
/// </summary>
public sealed partial class ClusterNode : IAsyncDisposable
{
    private readonly ActorSystem system;
    private readonly DataPlaneServer server;
    private readonly DataPlaneClient data;
    private readonly NodeRoleActors roles;
    private readonly NodeOptions options;
    private readonly ILogger logger;
    private int stopping;

    private ClusterNode(ActorSystem system, DataPlaneServer server, DataPlaneClient data, NodeRoleActors roles, NodeOptions options, string address, string dataEndpoint, ILogger logger)
    {
        this.system = system;
        this.server = server;
        this.data = data;
        this.roles = roles;
        this.options = options;
        this.logger = logger;
        Address = address;
        DataEndpoint = dataEndpoint;
    }

    /// <summary>This node's cluster address (akka.ssl.tcp://attention@host:port).</summary>
    public string Address { get; }

    /// <summary>Where clients, operators and other nodes reach this node's data plane (host:port).</summary>
    public string DataEndpoint { get; }

    /// <summary>The node's actor system.</summary>
    public ActorSystem Actors => system;

    /// <summary>Completes when the node's actor system has ended; true if that was asked for (<see cref="StopAsync"/>), false if the cluster took it down.</summary>
    public Task<bool> Terminated => system.WhenTerminated.ContinueWith(_ => Volatile.Read(ref stopping) != 0, TaskScheduler.Default);

    /// <summary>Bytes this node's data plane has read and written (server and client sides), for its card.</summary>
    private static (long Read, long Written) TrafficOf(DataPlaneServer server, DataPlaneClient data)
    {
        var (serverRead, serverWritten) = server.Traffic;
        var (clientRead, clientWritten) = data.Traffic;
        return (serverRead + clientRead, serverWritten + clientWritten);
    }

    /// <summary>
    /// Starts a node and waits until it is Up in its cluster (or throws <see cref="NodeStartException"/>
    /// after the join timeout). <paramref name="configure"/> may change how its workers
    /// compute (the tests' faulty workers do); the default is the kernel library.
    /// </summary>
    public static async Task<ClusterNode> StartAsync(NodeOptions options, ILoggerFactory loggers, Func<WorkerServices, WorkerServices>? configure = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggers);
        options.Validate();
        ClusterWire.Register();
        var logger = loggers.CreateLogger("AttentionActors.Node");
        ClusterCertificates certificates;
        try
        {
            certificates = ClusterCertificates.Load(options.Certificate!, options.CaCertificate!, options.CertificatePassword);
        }
        catch (CertificateFileException ex)
        {
            throw new NodeStartException(ex.Message, ex);
        }

        if (certificates.Role != PeerRole.Node)
        {
            throw new NodeStartException($"{options.Certificate} is a {certificates.Role.ToString().ToLowerInvariant()} certificate; a node needs a node certificate of the cluster's CA");
        }

        var tls = new DotNettySslSetup(certificates.Own, false, true, (certificate, _, _, _, _) => certificates.Check(certificate, out _) == PeerRole.Node);
        ActorSystem system;
        try
        {
            system = PipelineConfig.CreateSystem(ClusterConfig.SystemName, ClusterConfig.For(options), new LoggerFactorySetup(loggers), tls);
        }
        catch (Exception ex) when (ex is Akka.Remote.RemoteTransportException or SocketException or AggregateException)
        {
            throw new NodeStartException($"cannot open the cluster port {options.Bind}:{options.Port}: {ex.GetBaseException().Message}", ex);
        }

        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cluster = Akka.Cluster.Cluster.Get(system);
        cluster.RegisterOnMemberUp(up.SetResult);
        string address = cluster.SelfAddress.ToString();
        var codec = new WireCodec((ExtendedActorSystem)system);
        var data = new DataPlaneClient(certificates, new DataPlaneOptions(), codec, PeerRole.Node, PeerRole.Client);
        var roles = StartRoles(system, options, data, configure, logger);
        var door = new NodeDoor(roles);
        DataPlaneServer server;
        try
        {
            server = DataPlaneServer.Start(new IPEndPoint(IPAddress.Parse(options.Bind), options.DataPort), certificates, door, new DataPlaneOptions(), codec, loggers.CreateLogger("AttentionActors.DataPlane"));
        }
        catch (SocketException ex)
        {
            await system.Terminate().ConfigureAwait(false);
            throw new NodeStartException($"cannot open the data port {options.Bind}:{options.DataPort}: {ex.Message}", ex);
        }

        string dataEndpoint = DataPlane.DataEndpoint.Format(options.AdvertisedHost, server.LocalEndpoint.Port);
        var identity = new NodeIdentity(address, options.Roles, dataEndpoint, Environment.MachineName, Environment.ProcessId, Lanes.Resolve(options.KernelPath).ToString(), options.Has(NodeRoles.Worker) ? options.Threads : 0, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        door.Agent = system.ActorOf(Props.Create(() => new NodeAgent(identity, roles, options.ShutdownTimeout, logger, () => TrafficOf(server, data))), NodeHost.AgentName);
        var node = new ClusterNode(system, server, data, roles, options, address, dataEndpoint, logger);
        var timeout = options.JoinTimeout;
        var first = await Task.WhenAny(up.Task, system.WhenTerminated, Task.Delay(timeout, cancellationToken)).ConfigureAwait(false);
        if (first == system.WhenTerminated)
        {
            // Joined, then downed before the gossip that it is Up reached it (its seed lost, say): not a start failure.
            // Akka also ends a system whose TLS handshake as a client failed: a seed of another CA, a start failure.
            var reason = CoordinatedShutdown.Get(system).ShutdownReason;
            await node.DisposeAsync().ConfigureAwait(false);
            if (reason is CoordinatedShutdown.ClusterDowningReason)
            {
                throw new NodeStartException($"node {address} was downed by the cluster before it saw itself up") { Downed = true };
            }

            string why = reason?.GetType().Name.Contains("Tls", StringComparison.Ordinal) == true
                ? "the TLS handshake with a seed failed (the seed's certificate is not signed by this node's CA, or this node's by the seed's; the error above says which)"
                : $"its actor system stopped ({reason?.GetType().Name ?? "no reason given"})";
            string seeds = options.Seeds.Count == 0 ? "itself" : string.Join(", ", options.Seeds);
            throw new NodeStartException($"node {address} did not join the cluster of {seeds}: {why}");
        }

        if (first != up.Task)
        {
            await node.DisposeAsync().ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            string seeds = options.Seeds.Count == 0 ? "itself" : string.Join(", ", options.Seeds);
            throw new NodeStartException($"node {address} did not join the cluster of {seeds} within {timeout.TotalSeconds:F0} s: is a seed running, reachable, and of the same CA?");
        }

        LogUp(logger, address, options.Roles, dataEndpoint, identity.Simd, identity.Threads);
        return node;
    }

    private static NodeRoleActors StartRoles(ActorSystem system, NodeOptions options, DataPlaneClient data, Func<WorkerServices, WorkerServices>? configure, ILogger logger)
    {
        IActorRef? queue = null, jobs = null, reducer = null, feed = null;
        ProjectionCaches? projections = null;
        WorkerStats? stats = null;
        if (options.Has(NodeRoles.Coordinator))
        {
            string self = Akka.Cluster.Cluster.Get(system).SelfAddress.ToString();
            queue = system.ActorOf(Props.Create(() => new ShardQueue(self)), NodeHost.QueueName);
            var q = queue;
            jobs = system.ActorOf(Props.Create(() => new JobHost(options, q, data, logger)), NodeHost.JobsName);
        }

        if (options.Has(NodeRoles.Reducer))
        {
            ClientLinkProps links = (job, inbox) => ClientLink.Props(job, inbox, data);
            reducer = system.ActorOf(Props.Create(() => new Reducer(PipelineOptions.DefaultMaxMessageBytes, links)), NodeHost.ReducerName);
        }

        if (options.Has(NodeRoles.Worker))
        {
            var workerStats = stats = new WorkerStats();
            projections = new ProjectionCaches();
            var blocks = new BlockStore(options.BlockStoreBytes, (work, part, ct) => Reaching(work.Store!.Endpoint, () => data.RequestDataAsync(work.Store.Endpoint, work.Store.Key, new FetchShard(work.Job, part), seq => WireCodec.DecodeShardData(seq, work.Geometry, part), null, ct)));
            var services = WorkerServices.Kernels(options.KernelPath) with
            {
                Projections = projections,
                Fetch = blocks.Fetch,
                Chunked = blocks.ComputeInChunks,
                Send = (work, result, ct) =>
                {
                    if (Reaching(work.ResultsTo, () => data.RequestAsync(work.ResultsTo, default, result, null, ct)) is not Ack)
                    {
                        throw new DataPlaneException($"{work.ResultsTo} did not take the result of {work.Shard}");
                    }
                },
            };
            services = configure?.Invoke(services) ?? services;
            var fetch = services.Fetch;
            var f = feed = system.ActorOf(Props.Create(() => new WorkFeed(workerStats, fetch, options.Threads, blocks)), NodeHost.FeedName);
            for (int w = 0; w < options.Threads; w++)
            {
                var s = services;
                system.ActorOf(Props.Create(() => new Worker(f, s)), $"worker-{w}");
            }
        }

        return new NodeRoleActors(jobs, queue, reducer, feed, projections, stats);
    }

    /// <summary>
    /// Runs a data-plane request from a worker's compute thread, trying a connection that fails
    /// three times in all; a peer that still cannot be reached is reported as such, a refusal as
    /// what it is.
    /// </summary>
    private static T Reaching<T>(string endpoint, Func<Task<T>> request)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return request().GetAwaiter().GetResult();
            }
            catch (DataPlaneException ex) when (!ex.Refused)
            {
                if (attempt == 3)
                {
                    throw new PeerUnreachableException($"{endpoint} cannot be reached: {ex.Message}", ex);
                }

                Thread.Sleep(100 * attempt);
            }
        }
    }

    /// <summary>
    /// Leaves gracefully: a worker node takes no more shards and answers its running ones (up to the
    /// shutdown timeout), then the node leaves the cluster and its actor system ends.
    /// </summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref stopping, 1) != 0)
        {
            return;
        }

        if (roles.Feed is { } feed)
        {
            try
            {
                await feed.Ask<Drained>(new Drain(), options.ShutdownTimeout).ConfigureAwait(false);
            }
            catch (AskTimeoutException)
            {
                LogDrainIncomplete(logger, Address, options.ShutdownTimeout.TotalSeconds);
            }
        }

        await CoordinatedShutdown.Get(system).Run(CoordinatedShutdown.ClrExitReason.Instance).ConfigureAwait(false);
        LogStopped(logger, Address);
    }

    public async ValueTask DisposeAsync()
    {
        Interlocked.Exchange(ref stopping, 1);
        await system.Terminate().ConfigureAwait(false);
        await server.DisposeAsync().ConfigureAwait(false);
        await data.DisposeAsync().ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node} up: roles {Roles}, data {Data}, SIMD {Simd}, {Threads} worker threads")]
    private static partial void LogUp(ILogger logger, string node, IReadOnlyList<string> roles, string data, string simd, int threads);

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node} left the cluster and stopped")]
    private static partial void LogStopped(ILogger logger, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "node {Node} stopped before its running shards were answered ({Seconds} s shutdown timeout); their coordinators re-issue them")]
    private static partial void LogDrainIncomplete(ILogger logger, string node, double seconds);
}
