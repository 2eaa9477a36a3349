using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reducer;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Pipeline.Coordinator;

/// <summary>Notice from a worker: it began a shard (the shard's deadline starts now).</summary>
public sealed record ShardStarted(JobId Job, int ShardId, int Attempt);

/// <summary>Notice from a worker or the reducer: a shard attempt failed.</summary>
public sealed record ShardFailed(JobId Job, int ShardId, int Attempt, string Error);

/// <summary>Notice from the reducer: a shard's partials are merged.</summary>
public sealed record ShardMerged(JobId Job, int ShardId, double Flops);

/// <summary>Command: stop the job; the client gets <see cref="AttentionFailed"/> with the reason.</summary>
public sealed record CancelJob(JobId Job, string Reason);

/// <summary>Progress notice to the client, from the reducer: shards and FLOPs merged so far.</summary>
public sealed record JobProgress(JobId Job, int ShardsDone, int ShardsTotal, double FlopsDone, double FlopsTotal, TimeSpan Elapsed);

/// <summary>Deadlines and retries of a job; defaults in brackets.</summary>
public sealed record JobSettings
{
    /// <summary>Time every shard gets once started, before its share by size [30 s].</summary>
    public TimeSpan ShardTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Slowest worker speed the deadline allows for, in FLOP/s [0.5e9].</summary>
    public double MinWorkerFlops { get; init; } = 0.5e9;

    /// <summary>Attempts per shard before the job fails [3].</summary>
    public int MaxAttempts { get; init; } = 3;

    /// <summary>The job fails when no shard starts or finishes for this long [5 min].</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromMinutes(5);

    public TimeSpan DeadlineFor(Shard shard) => ShardTimeout + TimeSpan.FromSeconds(shard.Flops / MinWorkerFlops);
}

/// <summary>
/// Runs one job: tells the reducer what to expect, hands the shards (largest first) to the work
/// queue, gives each started shard a deadline, re-issues shards that miss it or fail, fails the job
/// naming the shard once a shard has used up its attempts, and honours cancellation (queued shards
/// are withdrawn and running ones interrupted through <see cref="JobCancellations"/>). States: <see cref="Dispatching"/> → <see cref="Finished"/>.
/// </summary>
internal sealed partial class JobCoordinator : ActorBase
{
    private readonly JobId job;
    private readonly AttentionProblem problem;
    private readonly ShardPlan plan;
    private readonly IActorRef queue;
    private readonly IActorRef reducer;
    private readonly IActorRef client;
    private readonly JobSettings settings;
    private readonly ILogger logger;
    private readonly JobCancellations cancellations;
    private readonly Dictionary<int, ShardState> shards = [];
    private int done;
    private DateTime lastActivity = DateTime.UtcNow;
    private ICancelable? stallTimer;

    public JobCoordinator(JobId job, AttentionProblem problem, ShardPlan plan, IActorRef queue, IActorRef reducer, IActorRef client, JobSettings settings, ILogger logger, JobCancellations? cancellations = null)
    {
        this.cancellations = cancellations ?? new JobCancellations();
        this.job = job;
        this.problem = problem;
        this.plan = plan;
        this.queue = queue;
        this.reducer = reducer;
        this.client = client;
        this.settings = settings;
        this.logger = logger;
        Dispatching();
    }

    private sealed record StallCheck;

    private sealed record ShardDeadline(int ShardId, int Attempt);

    private sealed class ShardState(Shard shard)
    {
        public Shard Shard { get; } = shard;

        public int Attempt { get; set; } = 1;

        public int Failures { get; set; }

        public bool Done { get; set; }

        public ICancelable? Deadline { get; set; }
    }

    protected override void PreStart()
    {
        reducer.Tell(new ExpectShards(job, problem, plan.Shards, client, Self), Self);
        foreach (var shard in plan.Shards)
        {
            shards[shard.Id] = new ShardState(shard);
            queue.Tell(new ComputeShard(job, shard, 1, problem, reducer, Self), Self);
        }

        stallTimer = Context.System.Scheduler.ScheduleTellRepeatedly(settings.StallTimeout / 4, settings.StallTimeout / 4, Self, new StallCheck(), Self);
        if (plan.Shards.Count == 0)
        {
            Become(Finished);
            Context.Stop(Self);
        }
    }

    protected override void PostStop()
    {
        cancellations.Forget(job);
        stallTimer?.Cancel();
        foreach (var state in shards.Values)
        {
            state.Deadline?.Cancel();
        }
    }

    private void Dispatching()
    {
        Receive<ShardStarted>(started =>
        {
            lastActivity = DateTime.UtcNow;
            if (shards.TryGetValue(started.ShardId, out var state) && !state.Done && started.Attempt == state.Attempt)
            {
                state.Deadline?.Cancel();
                state.Deadline = Context.System.Scheduler.ScheduleTellOnce(settings.DeadlineFor(state.Shard), Self, new ShardDeadline(state.Shard.Id, state.Attempt), Self);
            }
        });
        Receive<ShardMerged>(merged =>
        {
            lastActivity = DateTime.UtcNow;
            if (!shards.TryGetValue(merged.ShardId, out var state) || state.Done)
            {
                return;
            }

            state.Done = true;
            state.Deadline?.Cancel();
            done++;
            if (done == shards.Count)
            {
                Become(Finished);
                Context.Stop(Self);
            }
        });
        Receive<ShardDeadline>(late =>
        {
            if (shards.TryGetValue(late.ShardId, out var state) && !state.Done && late.Attempt == state.Attempt)
            {
                Retry(state, $"{state.Shard} missed its {settings.DeadlineFor(state.Shard).TotalSeconds:F1} s deadline");
            }
        });
        Receive<ShardFailed>(failed =>
        {
            if (shards.TryGetValue(failed.ShardId, out var state) && !state.Done)
            {
                state.Failures++;
                Retry(state, $"{state.Shard} failed: {failed.Error}");
            }
        });
        Receive<CancelJob>(cancel => Fail(cancel.Reason, cancelled: true));
        Receive<StallCheck>(_ =>
        {
            if (DateTime.UtcNow - lastActivity > settings.StallTimeout)
            {
                Fail($"no shard started or finished for {settings.StallTimeout.TotalSeconds:F0} s ({done} of {shards.Count} shards done); are any workers running?");
            }
        });
    }

    private void Finished() => ReceiveAny(_ => { });

    /// <summary>Re-issues a shard as a new attempt, or fails the job once its attempts are used up.</summary>
    private void Retry(ShardState state, string why)
    {
        state.Deadline?.Cancel();
        if (state.Attempt >= settings.MaxAttempts)
        {
            Fail($"{why} (attempt {state.Attempt} of {settings.MaxAttempts}); giving up");
            return;
        }

        state.Attempt++;
        LogRetry(logger, job, why, state.Attempt);
        queue.Tell(new ComputeShard(job, state.Shard, state.Attempt, problem, reducer, Self), Self);
    }

    private void Fail(string reason, bool cancelled = false)
    {
        if (cancelled)
        {
            LogCancelled(logger, job, reason);
        }
        else
        {
            LogFailed(logger, job, reason);
        }

        reducer.Tell(new FailJob(job, reason), Self);
        queue.Tell(new CancelShards(job), Self);
        cancellations.Cancel(job);
        Become(Finished);
        Context.Stop(Self);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "job {Job}: {Why}; re-issuing as attempt {Attempt}")]
    private static partial void LogRetry(ILogger logger, JobId job, string why, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} cancelled: {Reason}")]
    private static partial void LogCancelled(ILogger logger, JobId job, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "job {Job} failed: {Reason}")]
    private static partial void LogFailed(ILogger logger, JobId job, string reason);
}
