using AttentionActors.Actors;
using AttentionActors.Cluster.Transport;
using AttentionActors.Cluster.Wire;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cluster;

/// <summary>
/// A coordinator node's door: it takes a job's geometry (<see cref="SubmitAttention"/>), refuses
/// at once what it cannot run (too large for this node), gives a missing worker or reducer one node
/// timeout to be heard from (a node that has just reconnected to the broker may not have heard the
/// others yet) before refusing the job, receives the tensors in chunks, checks every value, plans the shards for the live workers, picks a reducer,
/// and starts a <see cref="JobCoordinator"/> for it, telling the client where its job runs. It holds
/// a job's tensors until the job's coordinator stops, and cancels the jobs of a client that vanishes.
/// </summary>
internal sealed partial class JobHost : ActorBase
{
    /// <summary>The host's actor name on every coordinator node.</summary>
    public const string ActorName = "jobs";

    private static readonly TimeSpan UploadIdleTimeout = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan MemberRecheck = TimeSpan.FromMilliseconds(250);

    private readonly NodeTransport transport;
    private readonly NodeOptions options;
    private readonly ILogger logger;
    private readonly Dictionary<JobId, Upload> uploads = [];
    private readonly Dictionary<JobId, (IActorRef Coordinator, IActorRef Client)> running = [];
    private readonly IActorRef queue;
    private int nextReducer;
    private ICancelable? sweep;

    private readonly NodeStats stats;

    public JobHost(NodeTransport transport, NodeOptions options, NodeStats stats, ILogger logger)
    {
        this.transport = transport;
        this.stats = stats;
        this.options = options;
        this.logger = logger;
        queue = new WorkQueueRef(transport);
        Receive<SubmitAttention>(OnSubmit);
        Receive<TensorChunk>(OnChunk);
        Receive<CancelJob>(cancel =>
        {
            if (uploads.Remove(cancel.Job))
            {
                LogCancelledUpload(logger, cancel.Job, cancel.Reason);
            }
            else if (running.TryGetValue(cancel.Job, out var job))
            {
                job.Coordinator.Tell(cancel, Sender);
            }
        });
        Receive<Terminated>(OnTerminated);
        Receive<RecheckMembers>(OnRecheckMembers);
        Receive<SweepUploads>(_ =>
        {
            var now = Context.System.Time.GetUtcNow();
            foreach (var (id, upload) in uploads.Where(u => now - u.Value.LastChunk > UploadIdleTimeout).ToList())
            {
                Reject(id, upload.Client, $"no part of the job's tensors arrived for {UploadIdleTimeout.TotalMinutes:F0} min; upload abandoned");
            }
        });
    }

    private sealed record SweepUploads;

    private sealed record RecheckMembers(JobId Job);

    private sealed class Upload(SubmitAttention submit, IActorRef client, DateTimeOffset now)
    {
        public SubmitAttention Submit { get; } = submit;

        public IActorRef Client { get; } = client;

        /// <summary>Every tensor a job may upload, in <see cref="TensorRole"/> order; those the job does not use are empty.</summary>
        public float[][] Data { get; } = [.. TensorLengths(submit.Geometry).Select(n => new float[n])];

        public long[] Received { get; } = new long[TensorLengths(submit.Geometry).Length];

        public DateTimeOffset LastChunk { get; set; } = now;

        /// <summary>All of Q, K and V have arrived; the job starts once a worker and a reducer are alive.</summary>
        public bool Complete { get; set; }

        /// <summary>When a missing role was first noticed and the refusal deadline counted from then, or null while every role is alive.</summary>
        public DateTimeOffset? MissingSince { get; set; }
    }

    protected override void PreStart() => sweep = Context.System.Scheduler.ScheduleTellRepeatedly(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30), Self, new SweepUploads(), Self);

    protected override void PostStop()
    {
        sweep?.Cancel();
        foreach (var (id, job) in running)
        {
            job.Coordinator.Tell(new CancelJob(id, $"coordinator node {transport.Node} is shutting down"), Self);
        }
    }

    /// <summary>
    /// Values a job uploads per <see cref="TensorRole"/>: Q, K and V for attention; Q, K and the lse
    /// [B, H, Nq] for a coverage or weights pass; a layer job's inputs and weights instead of Q, K and V.
    /// </summary>
    private static long[] TensorLengths(AttentionGeometry g)
    {
        bool noValues = g.Pass != JobPass.Attention;
        if (g.Layer is not { } l)
        {
            long mask = g.Mask is { } m ? (long)m.Batch * m.Heads * g.QuerySeq * g.KeySeq : 0;
            return [g.QueryShape.Length, g.KeyShape.Length, noValues ? 0 : g.ValueShape.Length, noValues ? (long)g.Batch * g.Heads * g.QuerySeq : 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, mask];
        }

        long e = (long)g.Heads * g.KeyDim, ekv = (long)g.KvHeads * g.KeyDim, ev = (long)g.KvHeads * g.ValueDim;
        return
        [
            0, 0, 0, 0,
            (long)g.Batch * g.QuerySeq * l.QueryIn,
            (long)g.Batch * g.KeySeq * l.KeyIn,
            l.SeparateValues ? (long)g.Batch * g.KeySeq * l.ValueIn : 0,
            e * l.QueryIn, l.QueryBias ? e : 0,
            ekv * l.KeyIn, l.KeyBias ? ekv : 0,
            ev * l.ValueIn, l.ValueBias ? ev : 0,
            0,
        ];
    }

    private void OnSubmit(SubmitAttention submit)
    {
        if (uploads.ContainsKey(submit.Job) || running.ContainsKey(submit.Job))
        {
            return;
        }

        var g = submit.Geometry;
        var lengths = TensorLengths(g);
        long values = lengths.Sum();
        string? refusal = null;
        if (lengths.Select((n, t) => (n, t)).FirstOrDefault(x => x.n > Array.MaxLength) is { n: > 0 } big)
        {
            refusal = $"tensor {(TensorRole)big.t} of job {submit.Job} has {big.n:N0} values; a coordinator holds at most {Array.MaxLength:N0} per tensor";
        }
        else if (values * sizeof(float) > options.MaxJobBytes)
        {
            refusal = $"the job's tensors take {values * 4.0 / (1 << 30):F2} GiB; coordinator {transport.Node} takes at most {options.MaxJobBytes / (double)(1 << 30):F2} GiB per job (Node:MaxJobBytes)";
        }

        if (refusal is not null)
        {
            Reject(submit.Job, Sender, refusal);
            return;
        }

        var upload = new Upload(submit, Sender, Context.System.Time.GetUtcNow());
        uploads[submit.Job] = upload;
        Context.Watch(Sender);
        LogSubmitted(logger, submit.Job, g.QueryShape, g.KeyShape, g.ValueShape);
        AwaitMissingRole(upload);
    }

    /// <summary>The refusal for a role no live node has, or null when a worker and a reducer are both alive.</summary>
    private string? MissingRole() =>
        !transport.Membership.WithRole(NodeRoles.Worker).Any() ? $"no worker node is alive on broker {transport.Broker.Describe}: start one with `attention node --roles worker --broker …`"
        : !transport.Membership.WithRole(NodeRoles.Reducer).Any() ? $"no reducer node is alive on broker {transport.Broker.Describe}: start one with `attention node --roles reducer --broker …`"
        : null;

    /// <summary>Starts counting a node timeout when a role is missing, and re-checks until it is heard from or the time is up.</summary>
    private void AwaitMissingRole(Upload upload)
    {
        if (upload.MissingSince is null && MissingRole() is not null)
        {
            upload.MissingSince = Context.System.Time.GetUtcNow();
            Context.ScheduleTellOnce(MemberRecheck, new RecheckMembers(upload.Submit.Job));
        }
    }

    private void OnRecheckMembers(RecheckMembers recheck)
    {
        if (!uploads.TryGetValue(recheck.Job, out var upload) || upload.MissingSince is not { } since)
        {
            return;
        }

        if (MissingRole() is not { } missing)
        {
            upload.MissingSince = null;
            if (upload.Complete)
            {
                uploads.Remove(recheck.Job);
                Start(upload);
            }
        }
        else if (Context.System.Time.GetUtcNow() - since >= transport.Broker.Options.NodeTimeout)
        {
            Reject(recheck.Job, upload.Client, $"{missing} (none heard from in {transport.Broker.Options.NodeTimeout.TotalSeconds:F0} s)");
        }
        else
        {
            Context.ScheduleTellOnce(MemberRecheck, recheck);
        }
    }

    private void OnChunk(TensorChunk chunk)
    {
        if (!uploads.TryGetValue(chunk.Job, out var upload))
        {
            return;
        }

        var target = upload.Data[(int)chunk.Tensor];
        if (chunk.Offset + chunk.Data.Length > target.Length)
        {
            Reject(chunk.Job, upload.Client, $"a chunk of {chunk.Tensor} covers values [{chunk.Offset}, {chunk.Offset + chunk.Data.Length}) but the tensor holds {target.Length}");
            return;
        }

        chunk.Data.Span.CopyTo(target.AsSpan((int)chunk.Offset));
        upload.Received[(int)chunk.Tensor] += chunk.Data.Length;
        upload.LastChunk = Context.System.Time.GetUtcNow();
        if (chunk.Last)
        {
            upload.Complete = true;
            AwaitMissingRole(upload);
            if (upload.MissingSince is null)
            {
                uploads.Remove(chunk.Job);
                Start(upload);
            }
        }
    }

    private void Start(Upload upload)
    {
        var job = upload.Submit.Job;
        var g = upload.Submit.Geometry;
        for (int t = 0; t < upload.Data.Length; t++)
        {
            if (upload.Received[t] != upload.Data[t].Length)
            {
                Reject(job, upload.Client, $"the upload ended with {upload.Received[t]:N0} of the {upload.Data[t].Length:N0} values of {(TensorRole)t}");
                return;
            }
        }

        AttentionProblem? problem = null;
        LayerProblem? layer = null;
        MaskBlocks? maskBlocks = null;
        ShardPlan plan;
        try
        {
            bool noValues = g.Pass != JobPass.Attention;
            if (g.Layer is not null)
            {
                layer = Layer(g, upload.Data);
            }
            else
            {
                problem = AttentionProblem.Create(
                    g,
                    new AttentionTensor(g.QueryShape.Name, upload.Data[0], g.Batch, g.Heads, g.QuerySeq, g.KeyDim),
                    new AttentionTensor(g.KeyShape.Name, upload.Data[1], g.Batch, g.KvHeads, g.KeySeq, g.KeyDim),
                    noValues ? AttentionTensor.Window(g.ValueShape, Memory<float>.Empty, 0, 0, 0, 0) : new AttentionTensor(g.ValueShape.Name, upload.Data[2], g.Batch, g.KvHeads, g.KeySeq, g.ValueDim),
                    g.Mask is { } mask ? AttentionMask.Additive(upload.Data[(int)TensorRole.Mask], mask.Batch, mask.Heads, g.QuerySeq, g.KeySeq) : null);
                maskBlocks = problem.Mask is { } m && g.Pass == JobPass.Attention ? MaskBlocks.Of(g, m) : null;
            }

            int workers = Math.Max(1, transport.Membership.WithRole(NodeRoles.Worker).Sum(m => m.Heartbeat.Threads));
            long budget = transport.Broker.Options.MaxMessageBytes - (256 << 10);
            long maxShard = Math.Min(budget, upload.Submit.MaxShardBytes > 0 ? upload.Submit.MaxShardBytes : options.MaxShardBytes ?? budget);
            var planOptions = new PlanOptions { MaxShardBytes = maxShard };
            plan = g.Pass switch
            {
                JobPass.Coverage => CoveragePlanner.Plan(g, workers, planOptions),
                JobPass.Weights => WeightsPlanner.Plan(g, workers, planOptions),
                _ => ShardPlanner.Plan(g, workers, planOptions),
            };
        }
        catch (Exception ex) when (ex is AttentionInputException or ArgumentException or InvalidOperationException)
        {
            Reject(job, upload.Client, ex.Message);
            return;
        }

        var reducers = transport.Membership.WithRole(NodeRoles.Reducer).Select(m => m.Heartbeat.Node).Order(StringComparer.Ordinal).ToList();
        if (reducers.Count == 0)
        {
            Reject(job, upload.Client, $"no reducer node is alive on broker {transport.Broker.Describe}");
            return;
        }

        var reducer = transport.Resolve(new ActorAddress(reducers[nextReducer++ % reducers.Count], "reducer"));
        var lse = upload.Data[(int)TensorRole.Lse];
        ShardInputSource inputs = layer is not null
            ? shard => ShardInput.SliceLayer(layer, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd)
            : g.Pass == JobPass.Coverage
            ? shard => ShardInput.SliceCoverage(problem!, lse, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd)
            : g.Weights is { } window
            ? shard => ShardInput.SliceWeights(problem!, lse, window, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd)
            : shard => ShardInput.Slice(problem!, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        var client = upload.Client;
        var audit = upload.Submit.Audit > 0 ? new AuditOptions(upload.Submit.Audit, OtherWorker) : null;
        var coordinator = Context.ActorOf(Props.Create(() => new JobCoordinator(job, g, plan, inputs, queue, reducer, client, options.Job, logger, audit, maskBlocks)), $"job-{job}");
        Context.Watch(coordinator);
        running[job] = (coordinator, client);
        client.Tell(new WatchJob(coordinator, reducer), Self);
        LogStarted(logger, job, plan.Shards.Count, reducer.Path);
    }

    /// <summary>
    /// A layer job from its uploaded inputs and weights, checked against the submitted geometry
    /// (every value finite, the shapes the geometry's). The coordinator never needs W_o: the output
    /// projection happens where the heads' output arrives.
    /// </summary>
    private static LayerProblem Layer(AttentionGeometry g, float[][] data)
    {
        var l = g.Layer!;
        float[]? Bias(TensorRole role, bool present) => present ? data[(int)role] : null;
        var weights = new MultiHeadWeights(g.Heads, data[(int)TensorRole.Wq], data[(int)TensorRole.Wk], data[(int)TensorRole.Wv], [], g.Heads * g.KeyDim, l.QueryIn, l.KeyIn, l.ValueIn, 0)
        {
            Bq = Bias(TensorRole.Bq, l.QueryBias),
            Bk = Bias(TensorRole.Bk, l.KeyBias),
            Bv = Bias(TensorRole.Bv, l.ValueBias),
        };
        if (g.KvHeads != g.Heads || g.KeyDim != g.ValueDim)
        {
            throw new AttentionInputException($"a layer job has as many key heads as query heads and equal head dims; {g} does not");
        }

        var layer = LayerProblem.Create(weights, g.Batch, data[(int)TensorRole.X], g.QuerySeq, data[(int)TensorRole.KeyInput], l.SeparateValues ? data[(int)TensorRole.ValueInput] : null, g.KeySeq, g.Options);
        var made = layer.Geometry;
        if (made.QueryShape != g.QueryShape || made.KeyShape != g.KeyShape || made.ValueShape != g.ValueShape || made.Layer != g.Layer)
        {
            throw new AttentionInputException($"the layer's inputs make {made} with {made.Layer}, not the submitted {g} with {g.Layer}");
        }

        return layer;
    }

    /// <summary>The work feed of a live worker node other than the one <paramref name="first"/> lives on, or null.</summary>
    private IActorRef? OtherWorker(Shard shard, ActorPath first)
    {
        var others = transport.Membership.WithRole(NodeRoles.Worker).Select(m => m.Heartbeat.Node).Where(n => $"node://{n}" != first.Address && $"local://{n}" != first.Address).ToList();
        return others.Count == 0 ? null : transport.Resolve(new ActorAddress(others[(shard.Id & int.MaxValue) % others.Count], WorkFeed.ActorName));
    }

    private void Reject(JobId job, IActorRef client, string reason)
    {
        uploads.Remove(job);
        LogRejected(logger, job, reason);
        client.Tell(new AttentionFailed(job, reason), Self);
    }

    private void OnTerminated(Terminated t)
    {
        foreach (var (id, _) in running.Where(r => r.Value.Coordinator.Equals(t.Actor)).ToList())
        {
            running.Remove(id);
            stats.JobEnded(id.Value);
        }

        foreach (var (id, job) in running.Where(r => r.Value.Client.Equals(t.Actor)).ToList())
        {
            job.Coordinator.Tell(new CancelJob(id, $"the client {t.Actor.Path} vanished"), Self);
        }

        foreach (var (id, _) in uploads.Where(u => u.Value.Client.Equals(t.Actor)).ToList())
        {
            uploads.Remove(id);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} submitted: Q {Q}, K {K}, V {V}")]
    private static partial void LogSubmitted(ILogger logger, JobId job, TensorShape q, TensorShape k, TensorShape v);

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} started: {Shards} shards, reducer {Reducer}")]
    private static partial void LogStarted(ILogger logger, JobId job, int shards, ActorPath reducer);

    [LoggerMessage(Level = LogLevel.Warning, Message = "job {Job} refused: {Reason}")]
    private static partial void LogRejected(ILogger logger, JobId job, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "upload of job {Job} cancelled: {Reason}")]
    private static partial void LogCancelledUpload(ILogger logger, JobId job, string reason);
}
