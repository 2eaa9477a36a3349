using System.Collections.Concurrent;
using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Pipeline;

/// <summary>
/// The pipeline in one process: a work queue, N workers and a reducer on an in-memory actor
/// system, and a coordinator and a client actor per job. Results are bit-for-bit those of
/// <see cref="Attention.Compute(AttentionProblem, ComputeOptions?, IProgress{long}?, CancellationToken)"/>.
/// Every job's task completes: with the result, or faulted when the job fails, is cancelled, loses
/// its coordinator or reducer, or the cluster is disposed under it.
/// </summary>
public sealed class AttentionCluster : IAsyncDisposable
{
    private readonly ActorSystem system;
    private readonly IActorRef queue;
    private readonly IActorRef reducer;
    private readonly ClusterOptions options;
    private readonly ILogger logger;
    private readonly ConcurrentDictionary<JobId, (IActorRef Client, TaskCompletionSource<AttentionResult> Result)> pending = new();
    private int disposed;

    private AttentionCluster(ClusterOptions options, TimeProvider? time)
    {
        options.Validate();
        this.options = options;
        var loggers = options.LoggerFactory ?? NullLoggerFactory.Instance;
        logger = loggers.CreateLogger("AttentionActors.Pipeline");
        system = ActorSystem.Create("attention", loggers, time);
        queue = system.ActorOf(Props.Create(() => new ShardQueue()) with { MailboxCapacity = 1 << 20 }, "queue");
        reducer = system.ActorOf(Props.Create(() => new Reducer(options.MaxMessageBytes)) with { MailboxCapacity = 1 << 16 }, "reducer");
        var compute = options.Compute ?? Worker.Kernel(options.KernelPath);
        var coverage = Worker.Coverage(options.KernelPath);
        var weights = Worker.Weights(options.KernelPath);
        var projections = new ProjectionCaches();
        for (int w = 0; w < options.Workers; w++)
        {
            system.ActorOf(Props.Create(() => new Worker(queue, compute, coverage, projections, weights)), $"worker-{w}");
        }
    }

    public ClusterOptions Options => options;

    /// <summary>Starts an embedded cluster; dispose it to stop its actors (pending jobs fail).</summary>
    public static AttentionCluster StartEmbedded(ClusterOptions? options = null) => new(options ?? new ClusterOptions(), null);

    /// <summary>Starts an embedded cluster on the given clock (tests move a manual one).</summary>
    public static AttentionCluster StartEmbedded(ClusterOptions options, TimeProvider time) => new(options, time);

    /// <summary>Validates, plans, runs and returns one attention job on a fresh embedded cluster with default settings.</summary>
    public static Task<AttentionResult> ComputeAsync(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options, IProgress<JobProgress>? progress, CancellationToken cancellationToken = default)
        => ComputeAsync(q, k, v, options, null, progress, cancellationToken);

    /// <summary>Validates, plans, runs and returns one attention job on a fresh embedded cluster.</summary>
    public static async Task<AttentionResult> ComputeAsync(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null, ClusterOptions? cluster = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var problem = AttentionProblem.Create(q, k, v, options);
        await using var embedded = StartEmbedded(cluster);
        return await embedded.ComputeAsync(problem, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Plans and runs a validated problem; throws <see cref="AttentionJobException"/> if the job fails.</summary>
    public Task<AttentionResult> ComputeAsync(AttentionProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
        => ComputeAsync(problem, ShardPlanner.Plan(EmbeddedPlanning(problem.Geometry), options.Workers, options.Plan), progress, cancellationToken);

    /// <summary>
    /// The geometry an embedded job is planned on: in one process a shard's mask is a view of the
    /// whole mask and nothing travels, so its bytes do not count against the shard budget.
    /// </summary>
    public static AttentionGeometry EmbeddedPlanning(AttentionGeometry geometry) => geometry.WithMask(null);

    /// <summary>Runs a given plan (tests use this to control the shards).</summary>
    public Task<AttentionResult> ComputeAsync(AttentionProblem problem, ShardPlan plan, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
        => ComputeAsync(problem, plan, null, progress, cancellationToken);

    /// <summary>
    /// Runs a plan, writing the output [B, H, Nq, Dv] into <paramref name="output"/> as rows finish
    /// (a memory-mapped file, say), or into a new array when null. Nothing is written after the task completes.
    /// </summary>
    public async Task<AttentionResult> ComputeAsync(AttentionProblem problem, ShardPlan plan, Memory<float>? output, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(plan);
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var g = problem.Geometry;
        long outputLength = (long)g.Batch * g.Heads * g.QuerySeq * g.ValueDim;
        var target = output ?? new float[checked((int)outputLength)];
        if (target.Length != outputLength)
        {
            throw new ArgumentException($"the output buffer holds {target.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}, {g.ValueDim}] needs {outputLength}", nameof(output));
        }

        ShardInputSource inputs = shard => ShardInput.Slice(problem, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        var maskBlocks = problem.Mask is { } mask ? MaskBlocks.Of(g, mask) : null;
        return await RunAsync(g, plan, inputs, target, progress, cancellationToken, maskBlocks).ConfigureAwait(false);
    }

    /// <summary>
    /// A multi-head layer's attention, <c>[B, H, N, E/H]</c> per head before the output projection:
    /// each shard carries its rows of the inputs and its head's weights, and its worker projects
    /// them, so no process but the workers ever holds X·W. Bit for bit <see cref="MultiHeadLayer.Project"/>
    /// followed by <see cref="ComputeAsync(AttentionProblem, IProgress{JobProgress}?, CancellationToken)"/>.
    /// </summary>
    public async Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var g = problem.Geometry;
        // In one process shards carry views and nothing travels: the job is planned like the attention on the projected tensors.
        var plan = ShardPlanner.Plan(g.WithLayer(null), options.Workers, options.Plan);
        var target = new float[checked((int)((long)g.Batch * g.Heads * g.QuerySeq * g.ValueDim))];
        ShardInputSource inputs = shard => ShardInput.SliceLayer(problem, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        return await RunAsync(g, plan, inputs, target, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The coverage c_j = Σ_h Σ_i a_ij of every key, <c>[B, Hkv, Nk]</c>, as a second job over the
    /// workers once the attention's log-sum-exp <paramref name="lse"/> <c>[B, H, Nq]</c> is known
    /// (<see cref="CoveragePlanner"/>); bit for bit <see cref="Inspection.Coverage"/>.
    /// </summary>
    public async Task<float[]> CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var coverage = new float[(long)problem.Batch * problem.KvHeads * problem.KeySeq];
        await CoverageAsync(problem, lse, CoveragePlanner.Plan(problem.Geometry, options.Workers, options.Plan), coverage, progress, cancellationToken).ConfigureAwait(false);
        return coverage;
    }

    /// <summary>Runs a coverage plan, writing the coverage <c>[B, Hkv, Nk]</c> into <paramref name="coverage"/> as key ranges finish.</summary>
    public Task CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, ShardPlan plan, Memory<float> coverage, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(plan);
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var g = problem.Geometry.ForPass(JobPass.Coverage);
        if (lse.Length != (long)g.Batch * g.Heads * g.QuerySeq)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}] needs {(long)g.Batch * g.Heads * g.QuerySeq}", nameof(lse));
        }

        if (coverage.Length != (long)g.Batch * g.KvHeads * g.KeySeq)
        {
            throw new ArgumentException($"the coverage buffer holds {coverage.Length} values; [{g.Batch}, {g.KvHeads}, {g.KeySeq}] needs {(long)g.Batch * g.KvHeads * g.KeySeq}", nameof(coverage));
        }

        ShardInputSource inputs = shard => ShardInput.SliceCoverage(problem, lse, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        return RunAsync(g, plan, inputs, coverage, progress, cancellationToken);
    }

    /// <summary>
    /// A window of the weights, pooled into cells (<see cref="WeightsWindow"/>), as a job over the
    /// workers once the attention's log-sum-exp <paramref name="lse"/> <c>[B, H, Nq]</c> is known
    /// (<see cref="WeightsPlanner"/>): <c>[CellRows, CellCols]</c>, bit for bit <see cref="Inspection.Weights"/>.
    /// </summary>
    public Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        return WeightsAsync(problem, lse, window, WeightsPlanner.Plan(problem.Geometry.ForWeights(window), options.Workers, options.Plan), progress, cancellationToken);
    }

    /// <summary>Runs a weights plan (<see cref="WeightsPlanner"/>) of <paramref name="window"/>: its cells <c>[CellRows, CellCols]</c>.</summary>
    public async Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, ShardPlan plan, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        ArgumentNullException.ThrowIfNull(plan);
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var g = problem.Geometry.ForWeights(window);
        if (lse.Length != (long)g.Batch * g.Heads * g.QuerySeq)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}] needs {(long)g.Batch * g.Heads * g.QuerySeq}", nameof(lse));
        }

        var cells = new float[window.Cells];
        ShardInputSource inputs = shard => ShardInput.SliceWeights(problem, lse, window, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        await RunAsync(g, plan, inputs, cells, progress, cancellationToken).ConfigureAwait(false);
        return cells;
    }

    private async Task<AttentionResult> RunAsync(AttentionGeometry g, ShardPlan plan, ShardInputSource inputs, Memory<float> target, IProgress<JobProgress>? progress, CancellationToken cancellationToken, MaskBlocks? maskBlocks = null)
    {
        var job = JobId.New();
        var result = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = system.ActorOf(Props.Create(() => new JobClient(job, g, target, progress, result, options.Job.ResultGrace)), $"client-{job}");
        pending[job] = (client, result);
        try
        {
            var coordinator = system.ActorOf(Props.Create(() => new JobCoordinator(job, g, plan, inputs, queue, reducer, client, options.Job, logger, maskBlocks: maskBlocks)), $"job-{job}");
            client.Tell(new WatchJob(coordinator, reducer));
            await using var registration = cancellationToken.Register(() => client.Tell(new CancelRequested("cancelled by the caller"))).ConfigureAwait(false);
            return await result.Task.ConfigureAwait(false);
        }
        finally
        {
            pending.TryRemove(job, out _);
            client.Tell(PoisonPill.Instance);
        }
    }

    /// <summary>Stops every actor; jobs still running fail with a message saying the cluster shut down.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        const string reason = "the embedded cluster was shut down before the job finished";
        foreach (var (_, (client, _)) in pending)
        {
            client.Tell(new HostStopping(reason));
        }

        await Task.WhenAny(Task.WhenAll(pending.Values.Select(p => p.Result.Task)), Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
        await system.TerminateAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);

        // A client that could not take the message (its mailbox full, say) still must not leave its caller waiting.
        foreach (var (_, (_, result)) in pending)
        {
            result.TrySetException(new AttentionJobException(reason));
        }
    }
}
