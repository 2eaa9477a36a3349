using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reducer;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Pipeline;

/// <summary>How the pipeline runs; defaults in brackets.</summary>
public sealed record ClusterOptions
{
    /// <summary>Worker actors, each computing one shard at a time on a thread of its own [one per core].</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;

    public PlanOptions Plan { get; init; } = new();

    public JobSettings Job { get; init; } = new();

    /// <summary>SIMD path of the workers' kernels [widest available; every path gives the same bits].</summary>
    public KernelPath Path { get; init; } = KernelPath.Auto;

    /// <summary>Replaces the kernel call of every worker (tests inject faults and delays with it) [null].</summary>
    public ShardComputer? Compute { get; init; }

    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>Thrown when a job fails; the message names the shard or cause.</summary>
public sealed class AttentionJobException : Exception
{
    public AttentionJobException()
    {
    }

    public AttentionJobException(string message)
        : base(message)
    {
    }

    public AttentionJobException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The pipeline in one process: a work queue, N workers and a reducer on an in-memory actor
/// system, and a coordinator per job. Results are bit-for-bit those of <see cref="Attention.Compute(AttentionProblem, ComputeSettings?, IProgress{long}?, CancellationToken)"/>.
/// </summary>
public sealed class AttentionCluster : IAsyncDisposable
{
    private readonly ActorSystem system;
    private readonly IActorRef queue;
    private readonly IActorRef reducer;
    private readonly ClusterOptions options;
    private readonly ILogger logger;
    private readonly JobCancellations cancellations = new();

    private AttentionCluster(ClusterOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Workers, 1);
        this.options = options;
        var loggers = options.LoggerFactory ?? NullLoggerFactory.Instance;
        logger = loggers.CreateLogger("AttentionActors.Pipeline");
        system = ActorSystem.Create("attention", loggers);
        queue = system.ActorOf(Props.Create(() => new ShardQueue()) with { MailboxCapacity = 1 << 20 }, "queue");
        reducer = system.ActorOf(Props.Create(() => new Reducer.Reducer()) with { MailboxCapacity = 1 << 16 }, "reducer");
        var compute = options.Compute ?? ((p, s, _, ct) => Worker.ComputeWithKernel(p, s, options.Path, ct));
        for (int w = 0; w < options.Workers; w++)
        {
            system.ActorOf(Props.Create(() => new Worker(queue, compute, cancellations)) with { DedicatedThread = true }, $"worker-{w}");
        }
    }

    public ClusterOptions Options => options;

    /// <summary>Starts an embedded cluster; dispose it to stop its actors.</summary>
    public static AttentionCluster StartEmbedded(ClusterOptions? options = null) => new(options ?? new ClusterOptions());

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
        => ComputeAsync(problem, ShardPlanner.Plan(problem, options.Workers, options.Plan), progress, cancellationToken);

    /// <summary>Runs a given plan (tests use this to control the shards).</summary>
    public async Task<AttentionResult> ComputeAsync(AttentionProblem problem, ShardPlan plan, IProgress<JobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(plan);
        cancellationToken.ThrowIfCancellationRequested();
        var job = JobId.New();
        var listener = new JobListener(progress);
        var coordinator = system.ActorOf(Props.Create(() => new JobCoordinator(job, problem, plan, queue, reducer, listener, options.Job, logger, cancellations)), $"job-{job}");
        await using var registration = cancellationToken.Register(() => coordinator.Tell(new CancelJob(job, "cancelled by the caller"))).ConfigureAwait(false);
        try
        {
            return await listener.Result.ConfigureAwait(false);
        }
        catch (AttentionJobException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException($"attention job {job} was cancelled", cancellationToken);
        }
    }

    public async ValueTask DisposeAsync() => await system.TerminateAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);

    /// <summary>The client end of a job: completes a task and forwards progress.</summary>
    private sealed class JobListener(IProgress<JobProgress>? progress) : IActorRef
    {
        private readonly TaskCompletionSource<AttentionResult> result = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ActorPath Path { get; } = new("local://attention", $"client-{Guid.NewGuid():N}");

        public Task<AttentionResult> Result => result.Task;

        public void Tell(object message, IActorRef? sender = null)
        {
            switch (message)
            {
                case AttentionCompleted completed:
                    result.TrySetResult(completed.Result);
                    break;
                case AttentionFailed failed:
                    result.TrySetException(new AttentionJobException(failed.Reason));
                    break;
                case JobProgress report:
                    progress?.Report(report);
                    break;
            }
        }
    }
}
