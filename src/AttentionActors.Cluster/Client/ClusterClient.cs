using System.Net;
using System.Security.Cryptography;
using Akka.Actor;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Wire;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Cluster.Client;

/// <summary>How a client reaches a cluster; defaults in brackets.</summary>
public sealed record ClusterClientOptions
{
    /// <summary>A node's data endpoint (host:port) to submit jobs to; the client learns the other coordinators from it [required].</summary>
    public string? Cluster { get; init; }

    /// <summary>This client's certificate (PKCS#12 with its key): a client certificate of the cluster's CA [required].</summary>
    public string? Certificate { get; init; }

    /// <summary>The cluster CA's certificate (PEM) [required].</summary>
    public string? CaCertificate { get; init; }

    /// <summary>The certificate file's password, from a file or the environment [none].</summary>
    public string? CertificatePassword { get; init; }

    /// <summary>Address the client's own data port listens on (workers fetch the job's data there, reducers send rows there) [127.0.0.1].</summary>
    public string Bind { get; init; } = "127.0.0.1";

    /// <summary>Host name or address the cluster's nodes reach this client at [the bind address].</summary>
    public string? Advertise { get; init; }

    /// <summary>The client's data port [0: any free port].</summary>
    public int Port { get; init; }

    /// <summary>Largest shard the coordinator should cut, in bytes [0: the coordinator's default].</summary>
    public long MaxShardBytes { get; init; }

    /// <summary>Fraction (0 to 1) of shards computed a second time on another node; any bit of difference fails the job [0].</summary>
    public double Audit { get; init; }

    /// <summary>Times a job is submitted again after a node it ran on was lost (its coordinator or reducer) [2].</summary>
    public int Resubmits { get; init; } = 2;

    /// <summary>How often the client tells its coordinator it still wants its jobs [1 s].</summary>
    public TimeSpan WatchInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A coordinator silent this long is taken for lost, and the job is submitted again elsewhere [5 s].</summary>
    public TimeSpan CoordinatorTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a job that left its coordinator may take to deliver a result already on its way [5 s].</summary>
    public TimeSpan ResultGrace { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Cluster is null)
        {
            throw new ArgumentException("no cluster: give a node's data endpoint (--cluster host:port)", nameof(Cluster));
        }

        DataEndpoint.Parse(Cluster);
        if (Certificate is null || CaCertificate is null)
        {
            throw new ArgumentException("a client needs its certificate and the cluster's CA (--cert, --ca; `attention cluster certs` makes them)", nameof(Certificate));
        }

        if (!IPAddress.TryParse(Bind, out _) || Port is < 0 or > 65535)
        {
            throw new ArgumentException($"client bind {Bind}:{Port} is not an IP address and a port from 0 to 65535", nameof(Bind));
        }

        if (Audit is < 0 or > 1 || double.IsNaN(Audit) || MaxShardBytes < 0 || Resubmits is < 0 or > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(Audit), $"audit {Audit} must be in [0, 1], max shard bytes {MaxShardBytes} ≥ 0, resubmits {Resubmits} in [0, 100]");
        }

        if (WatchInterval <= TimeSpan.Zero || CoordinatorTimeout <= WatchInterval || ResultGrace < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(WatchInterval), $"watch interval {WatchInterval} must be positive and below the coordinator timeout {CoordinatorTimeout}; result grace {ResultGrace} ≥ 0");
        }
    }
}

/// <summary>A cluster that cannot be reached or refuses this client; the message says which and why.</summary>
public sealed class ClusterUnreachableException : Exception
{
    public ClusterUnreachableException()
    {
    }

    public ClusterUnreachableException(string message)
        : base(message)
    {
    }

    public ClusterUnreachableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Runs jobs on a cluster, behind the same front door as the embedded pipeline. A client is not a
/// node: it holds a client certificate, which lets it submit, watch and cancel its own jobs and
/// nothing else. It keeps the job's tensors (workers fetch each shard's data from it, one hop) and
/// an inbox for the job's rows (the reducer streams them in). It tells the coordinator every
/// second that it still wants the job; if the coordinator falls silent, or fails the job because
/// its reducer was lost, the client submits the job again to a live coordinator — the result is
/// deterministic to the bit, so a resubmitted job writes the same output — and fails only when no
/// live node can take it.
/// </summary>
public sealed partial class ClusterClient : IAttentionRunner
{
    private readonly ClusterClientOptions options;
    private readonly ActorSystem system;
    private readonly DataPlaneServer server;
    private readonly DataPlaneClient data;
    private readonly TensorStore store;
    private readonly ClientDoor door;
    private readonly IActorRef inbox;
    private readonly string endpoint;
    private readonly ILogger logger;
    private readonly byte[] probe = [];
    private IReadOnlyList<string> knownDoors = [];

    private ClusterClient(ClusterClientOptions options, ActorSystem system, DataPlaneServer server, DataPlaneClient data, TensorStore store, ClientDoor door, ILogger logger)
    {
        this.options = options;
        this.system = system;
        this.server = server;
        this.data = data;
        this.store = store;
        this.door = door;
        this.logger = logger;
        inbox = system.ActorOf(Props.Create(() => new Inbox()), "inbox");
        string host = options.Advertise ?? (DataEndpoint.IsWildcard(options.Bind) ? DataEndpoint.Toward(DataEndpoint.Parse(options.Cluster!).Host) : options.Bind);
        endpoint = DataEndpoint.Format(host, server.LocalEndpoint.Port);
    }

    public string Where => $"the cluster at {options.Cluster}";

    /// <summary>Where the cluster's nodes reach this client's data plane (its tensor store and its jobs' inboxes).</summary>
    public string Endpoint => endpoint;

    /// <summary>Bytes this client's data plane has read and written so far (fetches served, rows received, requests).</summary>
    public (long Read, long Written) Traffic
    {
        get
        {
            var (serverRead, serverWritten) = server.Traffic;
            var (clientRead, clientWritten) = data.Traffic;
            return (serverRead + clientRead, serverWritten + clientWritten);
        }
    }

    /// <summary>
    /// Loads the client's certificate, opens its data port and checks that the cluster answers;
    /// throws <see cref="ClusterUnreachableException"/> (or <see cref="CertificateFileException"/>) saying why not.
    /// </summary>
    public static async Task<ClusterClient> ConnectAsync(ClusterClientOptions options, ILoggerFactory? loggers = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ClusterWire.Register();
        loggers ??= NullLoggerFactory.Instance;
        var certificates = ClusterCertificates.Load(options.Certificate!, options.CaCertificate!, options.CertificatePassword);
        var system = PipelineConfig.CreateSystem("attention-client", PipelineConfig.Base, new LoggerFactorySetup(loggers));
        var codec = new WireCodec((ExtendedActorSystem)system);
        var dataOptions = new DataPlaneOptions();
        var store = new TensorStore(dataOptions.MaxFrameBytes);
        var door = new ClientDoor(store);
        DataPlaneServer server;
        try
        {
            server = DataPlaneServer.Start(new IPEndPoint(IPAddress.Parse(options.Bind), options.Port), certificates, door, dataOptions, codec, loggers.CreateLogger("AttentionActors.DataPlane"));
        }
        catch (System.Net.Sockets.SocketException ex)
        {
            await system.Terminate().ConfigureAwait(false);
            throw new ClusterUnreachableException($"cannot open the client's data port {options.Bind}:{options.Port}: {ex.Message}", ex);
        }

        var client = new ClusterClient(options, system, server, new DataPlaneClient(certificates, dataOptions, codec, PeerRole.Node), store, door, loggers.CreateLogger("AttentionActors.Client"));
        try
        {
            await client.DoorsAsync(cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <remarks>
    /// A decoding step with grouped K/V heads runs as its stacked form (<see cref="KeyGroupStacking"/>):
    /// each shard then holds the rows of every query head of its K/V group, and a worker fetches and
    /// reads the group's keys and values once, not once per query head. The bits are the same.
    /// </remarks>
    public Task<AttentionResult> ComputeAsync(AttentionProblem problem, AttentionTensor? output = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
        => StackedJobs.RunAsync(problem, output, (job, into) => RunProblemAsync(job, into, progress, cancellationToken));

    private Task<AttentionResult> RunProblemAsync(AttentionProblem problem, AttentionTensor? output, IProgress<JobProgress>? progress, CancellationToken cancellationToken)
    {
        var g = problem.Geometry;
        var target = JobOutputs.Attention(g, output);
        byte[]? blocks = problem.Mask is { } mask ? MaskBlocks.Of(g, mask).Bits : null;
        return RunAsync(g, s => ShardInput.Slice(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd), target, blocks, progress, cancellationToken);
    }

    public Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        return RunAsync(g, s => ShardInput.SliceLayer(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd), JobOutputs.Attention(g, null), null, progress, cancellationToken);
    }

    public async Task<float[]> CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry.ForPass(JobPass.Coverage);
        JobOutputs.CheckLse(g, lse);
        var coverage = new float[(long)g.Batch * g.KvHeads * g.KeySeq];
        await RunAsync(g, s => ShardInput.SliceCoverage(problem, lse, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd), new AttentionTensor("coverage", coverage, g.Batch, g.KvHeads, g.KeySeq, 1), null, progress, cancellationToken).ConfigureAwait(false);
        return coverage;
    }

    public async Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        var g = problem.Geometry.ForWeights(window);
        JobOutputs.CheckLse(g, lse);
        var cells = new float[window.Cells];
        await RunAsync(g, s => ShardInput.SliceWeights(problem, lse, window, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd), new AttentionTensor("weights", cells, 1, 1, window.CellRows, window.CellCols), null, progress, cancellationToken).ConfigureAwait(false);
        return cells;
    }

    /// <summary>Submits the job, watches it, and submits it again to a live coordinator when a node it ran on is lost.</summary>
    private async Task<AttentionResult> RunAsync(AttentionGeometry g, Func<Shard, ShardInput> slice, AttentionTensor target, byte[]? maskBlocks, IProgress<JobProgress>? progress, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        AttentionJobException? lost = null;
        for (int submission = 0; submission <= options.Resubmits; submission++)
        {
            try
            {
                return await RunOnceAsync(g, slice, target, maskBlocks, progress, cancellationToken).ConfigureAwait(false);
            }
            catch (AttentionJobException ex) when (ex.NodeLost)
            {
                lost = ex;
                LogResubmitting(logger, ex.Message, submission + 1, options.Resubmits);
            }
        }

        throw new AttentionJobException($"{lost!.Message}; the job was submitted {options.Resubmits + 1} times and lost a node every time, so it was given up") { NodeLost = true };
    }

    private async Task<AttentionResult> RunOnceAsync(AttentionGeometry g, Func<Shard, ShardInput> slice, AttentionTensor target, byte[]? maskBlocks, IProgress<JobProgress>? progress, CancellationToken cancellationToken)
    {
        var job = JobId.New();
        byte[] storeKey = RandomNumberGenerator.GetBytes(32), inboxKey = RandomNumberGenerator.GetBytes(32), ownerKey = RandomNumberGenerator.GetBytes(32);
        var result = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = system.ActorOf(Props.Create(() => new JobClient(job, g, target, progress, result, options.ResultGrace)), $"client-{job}");
        client.Tell(new WatchJob(inbox, inbox));
        store.Add(job, new TensorStore.Entry(storeKey, g, slice));
        door.Open(inboxKey, new ClientDoor.Box(job, client, inbox));
        try
        {
            var request = new SubmitJob(job, g, new Pipeline.Workers.DataRef(endpoint, storeKey), new Pipeline.Workers.DataRef(endpoint, inboxKey), ownerKey, options.MaxShardBytes, options.Audit, maskBlocks);
            string coordinator = await SubmitAsync(request, cancellationToken).ConfigureAwait(false);
            await using var cancel = cancellationToken.Register(() =>
            {
                client.Tell(new CancelRequested("cancelled by the caller"));
                _ = data.RequestAsync(coordinator, ownerKey, new Pipeline.Coordinator.CancelJob(job, "cancelled by the caller"), TimeSpan.FromSeconds(5), CancellationToken.None).ContinueWith(t => t.Exception, TaskScheduler.Default);
            }).ConfigureAwait(false);
            await WatchAsync(job, coordinator, client, result.Task).ConfigureAwait(false);
            return await result.Task.ConfigureAwait(false);
        }
        finally
        {
            store.Remove(job);
            door.Close(inboxKey);
            client.Tell(PoisonPill.Instance);
        }
    }

    /// <summary>Submits to the first coordinator that takes the job; returns its data endpoint. A refusal fails the job, naming the reason.</summary>
    private async Task<string> SubmitAsync(SubmitJob request, CancellationToken cancellationToken)
    {
        var doors = await DoorsAsync(cancellationToken).ConfigureAwait(false);
        var unreachable = new List<string>();
        foreach (string coordinator in doors)
        {
            try
            {
                var accepted = (JobAccepted)await data.RequestAsync(coordinator, request.OwnerKey, request, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
                LogAccepted(logger, accepted.Job, accepted.Shards, accepted.Workers, accepted.Coordinator, accepted.Reducer);
                return coordinator;
            }
            catch (DataPlaneException ex) when (ex.Message.Contains(" refused ", StringComparison.Ordinal))
            {
                throw new AttentionJobException($"the cluster refused the job: {ex.Message[(ex.Message.IndexOf(": ", StringComparison.Ordinal) + 2)..]}");
            }
            catch (DataPlaneException ex)
            {
                unreachable.Add(ex.Message);
            }
        }

        throw new AttentionJobException($"no coordinator of the cluster at {options.Cluster} could take the job ({string.Join("; ", unreachable)})") { NodeLost = false };
    }

    /// <summary>
    /// The coordinators up now, the given node first when it is one: asked of the given node, or —
    /// when it is down — of the coordinators learnt before, so a job outlives the node it was first sent to.
    /// </summary>
    private async Task<IReadOnlyList<string>> DoorsAsync(CancellationToken cancellationToken)
    {
        var failures = new List<string>();
        foreach (string door in knownDoors.Prepend(options.Cluster!).Distinct())
        {
            try
            {
                var doors = (Doors)await data.RequestAsync(door, probe, new DoorsQuery(), options.CoordinatorTimeout, cancellationToken).ConfigureAwait(false);
                if (doors.Endpoints.Count == 0)
                {
                    throw new ClusterUnreachableException($"the cluster at {door} has no coordinator node up: start one (attention node --roles coordinator --seed …) or wait for it to join");
                }

                // The node asked is reached at the address used to ask it, whatever it advertises (a port published from a container, say).
                knownDoors = [.. doors.Endpoints.Select(e => e == doors.Self ? door : e).Distinct().OrderBy(e => e == door ? 0 : 1)];
                return knownDoors;
            }
            catch (DataPlaneException ex)
            {
                failures.Add(ex.Message);
            }
        }

        throw new ClusterUnreachableException($"cannot reach the cluster at {options.Cluster}{(knownDoors.Count > 0 ? $" nor its other coordinators {string.Join(", ", knownDoors)}" : "")}: {string.Join("; ", failures)}");
    }

    /// <summary>
    /// Tells the coordinator every watch interval that the job is still wanted, until it ends. A
    /// coordinator silent for the coordinator timeout, or one that no longer runs the job while no
    /// result came within the grace, is lost: the job fails as node-lost, to be submitted again.
    /// </summary>
    private async Task WatchAsync(JobId job, string coordinator, IActorRef client, Task<AttentionResult> result)
    {
        var lastHeard = DateTime.UtcNow;
        while (!result.IsCompleted)
        {
            if (await Task.WhenAny(result, Task.Delay(options.WatchInterval)).ConfigureAwait(false) == result)
            {
                return;
            }

            string? lost = null;
            try
            {
                var alive = (JobsAlive)await data.RequestAsync(coordinator, default, new WatchJobs([job]), options.CoordinatorTimeout).ConfigureAwait(false);
                lastHeard = DateTime.UtcNow;
                if (!alive.Jobs.Contains(job))
                {
                    lost = $"the coordinator at {coordinator} no longer runs job {job}";
                }
            }
            catch (DataPlaneException ex)
            {
                if (DateTime.UtcNow - lastHeard > options.CoordinatorTimeout)
                {
                    lost = $"the coordinator at {coordinator} stopped answering ({ex.Message})";
                }
            }

            if (lost is not null)
            {
                // A result already on its way still lands; otherwise the job is lost with its coordinator.
                if (await Task.WhenAny(result, Task.Delay(options.ResultGrace)).ConfigureAwait(false) != result)
                {
                    client.Tell(new AttentionFailed(job, $"{lost} and no result came within {options.ResultGrace.TotalSeconds:F0} s", NodeLost: true), inbox);
                }

                return;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await server.DisposeAsync().ConfigureAwait(false);
        await data.DisposeAsync().ConfigureAwait(false);
        await system.Terminate().ConfigureAwait(false);
    }

    /// <summary>The sender of every delivery to this client's job actors: they take rows and results from it alone.</summary>
    private sealed class Inbox : ReceiveActor
    {
        public Inbox() => ReceiveAny(_ => { });
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} accepted: {Shards} shards for {Workers} worker threads, coordinator {Coordinator}, reducer {Reducer}")]
    private static partial void LogAccepted(ILogger logger, JobId job, int shards, int workers, string coordinator, string reducer);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Reason}; submitting the job again ({Submission} of {Resubmits})")]
    private static partial void LogResubmitting(ILogger logger, string reason, int submission, int resubmits);
}
