using System.Collections.Concurrent;
using Akka.Actor;
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
/// The pipeline in one process: a work queue, N workers and a reducer on one Akka.NET actor system
/// without remoting, and a coordinator and a client actor per job. Results are bit-for-bit those of
/// <see cref="Attention.Compute(AttentionProblem, ComputeOptions?, IProgress{long}?, CancellationToken)"/>.
/// Every job's task completes: with the result, or faulted when the job fails, is cancelled, loses
/// its coordinator or reducer, or the pipeline is disposed under it.
/// </summary>
public sealed class EmbeddedPipeline : IAttentionRunner
{
    private readonly ActorSystem system;
    private readonly IActorRef queue;
    private readonly IActorRef reducer;
    private readonly PipelineOptions options;
    private readonly ILogger logger;
    private readonly ConcurrentDictionary<JobId, (IActorRef Client, TaskCompletionSource<AttentionResult> Result)> pending = new();
    private int disposed;

    private EmbeddedPipeline(PipelineOptions options)
    {
        options.Validate();
        this.options = options;
        var loggers = options.LoggerFactory ?? NullLoggerFactory.Instance;
        logger = loggers.CreateLogger("AttentionActors.Pipeline");
        var config = options.ActorConfig is { } extra ? extra.WithFallback(PipelineConfig.Base) : PipelineConfig.Base;
        system = PipelineConfig.CreateSystem("attention", config, new LoggerFactorySetup(loggers));
        queue = system.ActorOf(Props.Create(() => new ShardQueue()), "queue");
        reducer = system.ActorOf(Props.Create(() => new Reducer(options.MaxMessageBytes)), "reducer");
        var services = WorkerServices.Kernels(options.KernelPath);
        services = options.Compute is { } compute ? services with { Compute = compute } : services;
        for (int w = 0; w < options.Workers; w++)
        {
            system.ActorOf(Props.Create(() => new Worker(queue, services)), $"worker-{w}");
        }
    }

    public PipelineOptions Options => options;

    public string Where => $"the embedded pipeline ({options.Workers} worker{(options.Workers == 1 ? "" : "s")})";

    /// <summary>Starts an embedded pipeline; dispose it to stop its actors (pending jobs fail).</summary>
    public static EmbeddedPipeline Start(PipelineOptions? options = null) => new(options ?? new PipelineOptions());

    /// <summary>Validates, plans, runs and returns one attention job on a fresh embedded pipeline.</summary>
    public static async Task<AttentionResult> ComputeAsync(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null, PipelineOptions? pipeline = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var problem = AttentionProblem.Create(q, k, v, options);
        await using var embedded = Start(pipeline);
        return await embedded.ComputeAsync(problem, null, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The geometry an embedded job is planned on: in one process a shard's mask is a view of the
    /// whole mask and nothing travels, so its bytes do not count against the shard budget.
    /// </summary>
    public static AttentionGeometry Planning(AttentionGeometry geometry) => geometry.WithMask(null);

    /// <inheritdoc/>
    /// <remarks>
    /// A decoding step with grouped K/V heads runs as its stacked form (<see cref="KeyGroupStacking"/>):
    /// each shard then holds the rows of every query head of its K/V group and reads their keys and
    /// values once, not once per query head. The bits are the same.
    /// </remarks>
    public Task<AttentionResult> ComputeAsync(AttentionProblem problem, AttentionTensor? output = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
        => StackedJobs.RunAsync(problem, output, (job, into) => ComputeAsync(job, Plan(job.Geometry, job.Cache is not null, options), into, progress, cancellationToken));

    /// <summary>
    /// The plan an embedded pipeline of <paramref name="options"/> runs a job of <paramref name="geometry"/>
    /// with (after its grouped query heads are stacked, <see cref="StackedJobs"/>): its keys and
    /// values in tensors, or in a <see cref="KeyValueCache"/> when <paramref name="fromCache"/>.
    /// A dry run shows the same plan.
    /// </summary>
    internal static ShardPlan Plan(AttentionGeometry geometry, bool fromCache, PipelineOptions options)
        => ShardPlanner.Plan(Planning(geometry), options.Workers, PlanOptionsFor(geometry, fromCache, options.Plan));

    /// <summary>
    /// The planner's settings for an attention job in one process. A shard's keys and values are
    /// views of the job's, copied only when its kernel packs them (a shard of more than
    /// <see cref="Attention.PackAsItGoesRows"/> rows, one panel's, packs its blocks first). When no shard can pack
    /// — a decoding step's rows, or keys and values in a <see cref="KeyValueCache"/> — the budget
    /// bounds a shard's rows and partials, not its keys, as for a cluster's workers reading their
    /// block store: a step is then a few shards of long key ranges instead of dozens of a few
    /// blocks each, and every shard costs a round trip through the actors (0.15–0.5 ms; a step of
    /// 32 heads over 8 against 65536 keys was 64 shards on the default budget, and is 8).
    /// </summary>
    private static PlanOptions PlanOptionsFor(AttentionGeometry job, bool fromCache, PlanOptions plan)
        => fromCache || job.QuerySeq <= Attention.PackAsItGoesRows ? plan with { KeysFromStore = true } : plan;

    /// <summary>
    /// A decoding step: <paramref name="q"/> <c>[B, H, Nq, d_k]</c> (Nq ≤ 256 rows per head) against
    /// every key and value in <paramref name="cache"/>, each shard computed by a worker straight from
    /// the cache's blocks (no K or V tensor is read or copied). The bits are those of
    /// <see cref="Attention.Compute(AttentionTensor, KeyValueCache, AttentionOptions?, ComputeOptions?, CancellationToken)"/>
    /// and of K and V tensors holding the same keys and values. The cache's appends and truncations
    /// wait until the step is done; the same checks refuse the same steps, before any shard starts.
    /// </summary>
    public async Task<AttentionResult> ComputeAsync(AttentionTensor q, KeyValueCache cache, AttentionOptions? attention = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(cache);
        await cache.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await ComputeAsync(cache.StepProblem(q, attention), null, progress, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            cache.Gate.Release();
        }
    }

    /// <summary>Runs a given plan (tests use this to control the shards), writing the output into <paramref name="output"/> or a new array.</summary>
    public async Task<AttentionResult> ComputeAsync(AttentionProblem problem, ShardPlan plan, AttentionTensor? output = null, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(plan);
        var g = problem.Geometry;
        var target = JobOutputs.Attention(g, output);
        ShardInputSource inputs = shard => ShardInput.Slice(problem, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        var maskBlocks = problem.Mask is { } mask ? MaskBlocks.Of(g, mask) : null;
        return await RunAsync(g, plan, inputs, target, progress, cancellationToken, maskBlocks).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;

        // In one process nothing travels, so the projections run first, each one GEMM on the workers'
        // threads, and the job is the attention of the projected tensors. Every projected value is its
        // own fused multiply-add chain, so these are the bits a cluster's workers get projecting shard by shard.
        var (q, k, v) = await Task.Run(() => MultiHeadLayer.Project(problem.Weights, g.Batch, problem.X, g.QuerySeq, problem.KeyInput, problem.ValueInput, g.KeySeq, options.Workers, cancellationToken), cancellationToken).ConfigureAwait(false);
        return await ComputeAsync(AttentionProblem.Create(q, k, v, g.Options), null, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
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
        var g = problem.Geometry.ForPass(JobPass.Coverage);
        JobOutputs.CheckLse(g, lse);
        JobOutputs.CheckCoverage(g, coverage);
        ShardInputSource inputs = shard => ShardInput.SliceCoverage(problem, lse, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        return RunAsync(g, plan, inputs, new AttentionTensor("coverage", coverage, g.Batch, g.KvHeads, g.KeySeq, 1), progress, cancellationToken);
    }

    /// <inheritdoc/>
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
        var g = problem.Geometry.ForWeights(window);
        JobOutputs.CheckLse(g, lse);
        var cells = new float[window.Cells];
        ShardInputSource inputs = shard => ShardInput.SliceWeights(problem, lse, window, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
        await RunAsync(g, plan, inputs, new AttentionTensor("weights", cells, 1, 1, window.CellRows, window.CellCols), progress, cancellationToken).ConfigureAwait(false);
        return cells;
    }

    private async Task<AttentionResult> RunAsync(AttentionGeometry g, ShardPlan plan, ShardInputSource inputs, AttentionTensor target, IProgress<JobProgress>? progress, CancellationToken cancellationToken, MaskBlocks? maskBlocks = null)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        var job = JobId.New();
        var result = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = system.ActorOf(Props.Create(() => new JobClient(job, g, target, progress, result, options.Job.ResultGrace)), $"client-{job}");
        pending[job] = (client, result);
        try
        {
            var setup = new JobSetup(job, g, plan, queue, reducer, client, options.Job) { Inputs = inputs, MaskBlocks = maskBlocks };
            var coordinator = system.ActorOf(Props.Create(() => new JobCoordinator(setup, logger)), $"job-{job}");
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

    /// <summary>Stops every actor; jobs still running fail with a message saying the pipeline shut down.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        const string reason = "the embedded pipeline was shut down before the job finished";
        foreach (var (_, (client, _)) in pending)
        {
            client.Tell(new HostStopping(reason));
        }

        await Task.WhenAny(Task.WhenAll(pending.Values.Select(p => p.Result.Task)), Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
        await system.Terminate().ConfigureAwait(false);

        // A client that could not take the message still must not leave its caller waiting.
        foreach (var (_, (_, result)) in pending)
        {
            result.TrySetException(new AttentionJobException(reason));
        }
    }
}
