using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Pipeline.Coordinator;

/// <summary>Notice from a worker: it began attempt <paramref name="Attempt"/> of a shard (the attempt's deadline starts now).</summary>
public sealed record ShardStarted(JobId Job, int ShardId, int Attempt) : IWireMessage;

/// <summary>Notice from a worker or the reducer: attempt <paramref name="Attempt"/> of a shard failed.</summary>
public sealed record ShardFailed(JobId Job, int ShardId, int Attempt, string Error) : IWireMessage;

/// <summary>
/// Notice from the reducer: a shard's partials (from the worker at <paramref name="Worker"/>) are
/// merged; with <paramref name="Audit"/>, a second computation on another node gave the same bits.
/// </summary>
public sealed record ShardMerged(JobId Job, int ShardId, string Worker = "", bool Audit = false) : IWireMessage;

/// <summary>Notice from the reducer: an audited shard came back with different bits from two nodes; the job fails with <paramref name="Reason"/>.</summary>
public sealed record AuditMismatch(JobId Job, int ShardId, string Reason) : IWireMessage;

/// <summary>
/// Which shards a job re-computes on a second worker node (<paramref name="Fraction"/> of them,
/// chosen by shard id) and where: <paramref name="Route"/> gives a worker on a node other than the
/// first result's (its actor path), or null when no other node is alive.
/// </summary>
public sealed record AuditOptions(double Fraction, Func<Shard, ActorPath, IActorRef?> Route)
{
    /// <summary>Whether shard <paramref name="id"/> is audited: a fixed hash of the id below the fraction.</summary>
    public bool Covers(int id) => Fraction >= 1 || (uint)(id * 2654435761u) < Fraction * 4294967296.0;
}

/// <summary>Command: stop the job; the client gets <see cref="AttentionFailed"/> with the reason.</summary>
public sealed record CancelJob(JobId Job, string Reason) : IWireMessage;

/// <summary>Where a worker's data for a shard comes from: views of the job's tensors in one process.</summary>
public delegate ShardInput ShardInputSource(Shard shard);

/// <summary>
/// Runs one job: tells the reducer what to expect, hands the shards (largest first) to the work
/// queue, gives each started attempt a deadline, re-issues shards whose current attempt is late or
/// failed, and fails the job naming the shard once it has used up its attempts. However the job
/// ends, the coordinator tells the queue (<see cref="JobEnded"/>: queued copies are dropped, running
/// ones interrupted) and, on failure, the client directly. It never reads Q, K or V: shard data come
/// from a <see cref="ShardInputSource"/>. Time is the actor system's scheduler, so tests move a test
/// scheduler instead of sleeping. States: <see cref="Dispatching"/> → <see cref="Finished"/>.
/// </summary>
internal sealed partial class JobCoordinator : ReceiveActor, IWithTimers
{
    private readonly JobId job;
    private readonly AttentionGeometry geometry;
    private readonly ShardPlan plan;
    private readonly ShardInputSource inputs;
    private readonly IActorRef queue;
    private readonly IActorRef reducer;
    private readonly IActorRef client;
    private readonly JobOptions options;
    private readonly ILogger logger;
    private readonly AuditOptions? audit;
    private readonly MaskBlocks? maskBlocks;
    private readonly Dictionary<int, ShardState> shards = [];
    private readonly HashSet<int> audited = [];
    private int done;
    private DateTimeOffset lastActivity;

    public JobCoordinator(JobId job, AttentionGeometry geometry, ShardPlan plan, ShardInputSource inputs, IActorRef queue, IActorRef reducer, IActorRef client, JobOptions options, ILogger logger, AuditOptions? audit = null, MaskBlocks? maskBlocks = null)
    {
        this.audit = audit;
        this.maskBlocks = maskBlocks;
        this.job = job;
        this.geometry = geometry;
        this.plan = plan;
        this.inputs = inputs;
        this.queue = queue;
        this.reducer = reducer;
        this.client = client;
        this.options = options;
        this.logger = logger;
        Dispatching();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    private static DateTimeOffset Now => Context.System.Scheduler.Now;

    private sealed record StallCheck : INoSerializationVerificationNeeded;

    private sealed record ShardDeadline(int ShardId, int Attempt) : INoSerializationVerificationNeeded;

    private sealed class ShardState(Shard shard)
    {
        public Shard Shard { get; } = shard;

        public int Attempt { get; set; } = 1;

        public bool Done { get; set; }
    }

    protected override void PreStart()
    {
        lastActivity = Now;
        if (audit is not null)
        {
            audited.UnionWith(plan.Shards.Where(s => audit.Covers(s.Id)).Select(s => s.Id));
        }

        reducer.Tell(new ExpectShards(job, geometry, plan.Shards, client, Self, [.. audited.Order()], maskBlocks), Self);
        foreach (var shard in plan.Shards)
        {
            shards[shard.Id] = new ShardState(shard);
            queue.Tell(Work(shard, 1), Self);
        }

        Timers.StartPeriodicTimer("stall", new StallCheck(), options.StallTimeout / 4);
        if (plan.Shards.Count == 0)
        {
            End();
        }
    }

    /// <summary>A crashed coordinator has lost track of its shards: the job fails rather than start over unseen.</summary>
    protected override void PreRestart(Exception reason, object message)
    {
        Fail($"the coordinator of job {job} crashed: {reason.GetType().Name}: {reason.Message}");
        base.PreRestart(reason, message);
    }

    private void Dispatching()
    {
        Receive<ShardStarted>(started =>
        {
            lastActivity = Now;
            if (Current(started.ShardId, started.Attempt) is { } state)
            {
                Timers.StartSingleTimer(("deadline", state.Shard.Id), new ShardDeadline(state.Shard.Id, state.Attempt), options.DeadlineFor(state.Shard));
            }
        });
        Receive<ShardMerged>(merged =>
        {
            lastActivity = Now;
            if (merged.Audit)
            {
                if (audited.Remove(merged.ShardId) && done == shards.Count && audited.Count == 0)
                {
                    End();
                }

                return;
            }

            if (!shards.TryGetValue(merged.ShardId, out var state) || state.Done)
            {
                return;
            }

            state.Done = true;
            Timers.Cancel(("deadline", state.Shard.Id));
            if (audited.Contains(merged.ShardId))
            {
                Audit(state, merged.Worker);
            }

            if (++done == shards.Count && audited.Count == 0)
            {
                End();
            }
        });
        Receive<AuditMismatch>(mismatch => Fail(mismatch.Reason));
        Receive<ShardDeadline>(late =>
        {
            if (Current(late.ShardId, late.Attempt) is { } state)
            {
                Retry(state, $"{state.Shard} missed its {options.DeadlineFor(state.Shard).TotalSeconds:F1} s deadline");
            }
        });
        Receive<ShardFailed>(failed =>
        {
            // Only the current attempt counts: a late failure of an attempt already replaced must not use up another.
            if (Current(failed.ShardId, failed.Attempt) is { } state)
            {
                Retry(state, $"{state.Shard} failed: {failed.Error}");
            }
            else
            {
                LogStaleFailure(logger, job, failed.ShardId, failed.Attempt, failed.Error);
            }
        });
        Receive<CancelJob>(cancel => Fail(cancel.Reason, cancelled: true));
        Receive<StallCheck>(_ =>
        {
            if (Now - lastActivity > options.StallTimeout)
            {
                Fail($"no shard started or finished for {options.StallTimeout.TotalSeconds:F0} s ({done} of {shards.Count} shards done); are any workers running?");
            }
        });
    }

    private void Finished() => ReceiveAny(_ => { });

    /// <summary>Sends a merged shard to a worker on another node; its bits must match the first result's.</summary>
    private void Audit(ShardState state, string worker)
    {
        if (!ActorPath.TryParse(worker, out var first) || audit?.Route(state.Shard, first) is not { } other)
        {
            Fail($"audit of {state.Shard}: no worker node other than the one that computed it ({worker}) is alive to compute it again");
            return;
        }

        other.Tell(new ComputeShard(job, state.Shard, state.Attempt, inputs(state.Shard), reducer, Self), Self);
    }

    /// <summary>The state of a shard still running as <paramref name="attempt"/>, or null.</summary>
    private ShardState? Current(int shardId, int attempt)
        => shards.TryGetValue(shardId, out var state) && !state.Done && state.Attempt == attempt ? state : null;

    private ComputeShard Work(Shard shard, int attempt) => new(job, shard, attempt, inputs(shard), reducer, Self);

    /// <summary>Re-issues a shard as a new attempt, or fails the job once its attempts are used up.</summary>
    private void Retry(ShardState state, string why)
    {
        Timers.Cancel(("deadline", state.Shard.Id));
        if (state.Attempt >= options.MaxAttempts)
        {
            Fail($"{why} (attempt {state.Attempt} of {options.MaxAttempts}); giving up");
            return;
        }

        state.Attempt++;
        LogRetry(logger, job, why, state.Attempt);
        queue.Tell(Work(state.Shard, state.Attempt), Self);
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

        client.Tell(new AttentionFailed(job, reason, cancelled), Self);
        reducer.Tell(new FailJob(job, reason), Self);
        End(reason);
    }

    /// <summary>Withdraws the job's queued shards and interrupts running ones, then stops.</summary>
    private void End(string why = "completed")
    {
        queue.Tell(new JobEnded(job, why), Self);
        Become(Finished);
        Context.Stop(Self);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "job {Job}: {Why}; re-issuing as attempt {Attempt}")]
    private static partial void LogRetry(ILogger logger, JobId job, string why, int attempt);

    [LoggerMessage(Level = LogLevel.Debug, Message = "job {Job}: ignoring the failure of shard {ShardId} attempt {Attempt}, already replaced: {Error}")]
    private static partial void LogStaleFailure(ILogger logger, JobId job, int shardId, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} cancelled: {Reason}")]
    private static partial void LogCancelled(ILogger logger, JobId job, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "job {Job} failed: {Reason}")]
    private static partial void LogFailed(ILogger logger, JobId job, string reason);
}
