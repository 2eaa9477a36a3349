using Akka.Actor;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Pipeline.Coordinator;

/// <summary>Notice from a worker: it began attempt <paramref name="Attempt"/> of a shard (with the attempt's grant).</summary>
public sealed record ShardStarted(JobId Job, int ShardId, int Attempt, byte[] Grant) : IWireMessage;

/// <summary>Why a shard attempt failed, which decides what its coordinator does.</summary>
public enum ShardFailure
{
    /// <summary>Computing it failed, or the reducer refused its result: the shard is tried again.</summary>
    Compute,

    /// <summary>Its data could not be fetched from the job's tensor store: the client that holds them is gone, and so is the job.</summary>
    StoreUnreachable,

    /// <summary>Its result could not be delivered to the reducer's node: the job's partials are lost with it, so the job fails as node-lost (its client submits it again).</summary>
    ReducerUnreachable,
}

/// <summary>
/// Notice from a worker, or from the reducer for a result it refused: attempt <paramref name="Attempt"/>
/// of a shard failed, for <paramref name="Kind"/>. It carries the attempt's grant, so only the worker
/// the attempt went to (or the reducer holding its result) can fail it.
/// </summary>
public sealed record ShardFailed(JobId Job, int ShardId, int Attempt, byte[] Grant, string Error, ShardFailure Kind = ShardFailure.Compute) : IWireMessage;

/// <summary>Notice from the reducer: attempt <paramref name="Attempt"/> of a shard is merged (or, for an audit attempt, matched the first result's bits).</summary>
public sealed record ShardMerged(JobId Job, int ShardId, int Attempt) : IWireMessage;

/// <summary>Notice from the reducer: the audit attempt of a shard gave other bits than its merged attempt; <paramref name="Detail"/> says how.</summary>
public sealed record AuditMismatch(JobId Job, int ShardId, int FirstAttempt, int AuditAttempt, string Detail) : IWireMessage;

/// <summary>Command: stop the job; the client gets <see cref="AttentionFailed"/> with the reason.</summary>
public sealed record CancelJob(JobId Job, string Reason) : IWireMessage;

/// <summary>Question to a coordinator from its node: how far its job is and which nodes it has used.</summary>
public sealed record JobStatusQuery : INoSerializationVerificationNeeded;

/// <summary>A coordinator's answer to <see cref="JobStatusQuery"/>.</summary>
public sealed record JobStatusReport(JobId Job, int ShardsDone, int ShardsTotal, IReadOnlyList<string> Workers) : INoSerializationVerificationNeeded;

/// <summary>
/// Runs one job: tells the reducer what to expect (with the job key that checks results' grants),
/// hands the shards (largest first) to the work queue, gives each attempt a deadline from the moment
/// the queue hands it to a worker, re-issues shards whose current attempt is late, failed or lost
/// with its node, and fails the job naming the shard once it has used up its attempts. It takes a
/// notice only from the party that may send it: a start or failure only with the attempt's grant
/// (its worker, or the reducer holding its result), merges and audit results from the reducer, a
/// cancel from its client, its reducer or its parent. However the job ends, it tells the queue (<see cref="JobEnded"/>: queued copies
/// dropped, running ones interrupted) and, on failure, the client and the reducer. Time is the actor
/// system's scheduler, so tests move a test scheduler. States: <see cref="Dispatching"/> → <see cref="Finished"/>.
/// </summary>
internal sealed partial class JobCoordinator : ReceiveActor, IWithTimers
{
    /// <summary>Attempt numbers of audits start here: an audit result is told from a regular one by its attempt.</summary>
    public const int AuditAttempts = 1 << 20;

    private readonly JobSetup setup;
    private readonly JobId job;
    private readonly JobOptions options;
    private readonly ILogger logger;
    private readonly byte[] key = Grants.NewKey();
    private readonly Dictionary<int, ShardState> shards = [];
    private int done;
    private int audits;
    private DateTimeOffset lastActivity;

    public JobCoordinator(JobSetup setup, ILogger logger)
    {
        this.setup = setup;
        this.logger = logger;
        job = setup.Job;
        options = setup.Options;
        Dispatching();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    private static DateTimeOffset Now => Context.System.Scheduler.Now;

    private sealed record StallCheck : INoSerializationVerificationNeeded;

    private sealed record ShardDeadline(int ShardId, int Attempt) : INoSerializationVerificationNeeded;

    private sealed class ShardState(Shard shard, bool audited)
    {
        public Shard Shard { get; } = shard;

        public int Attempt { get; set; } = 1;

        /// <summary>Attempts that failed in a way the shard may have caused; the job fails when they reach the limit.</summary>
        public int Charged { get; set; }

        /// <summary>Whether the current attempt's worker said it began computing it (a shard still waiting on a node did not).</summary>
        public bool Started { get; set; }

        public bool Done { get; set; }

        /// <summary>Whether a second computation on another node must match the merged one before the job completes.</summary>
        public bool Audited { get; set; } = audited;

        /// <summary>The worker each attempt went to (from the queue's notices, never from a message's own claim).</summary>
        public Dictionary<int, IActorRef> Workers { get; } = [];
    }

    protected override void PreStart()
    {
        lastActivity = Now;
        var audited = setup.Audit > 0 ? setup.Plan.Shards.Where(s => Covers(setup.Audit, s.Id)).Select(s => s.Id).ToHashSet() : [];
        audits = audited.Count;
        setup.Reducer.Tell(new ExpectShards(job, setup.Geometry, setup.Plan.Shards, setup.Client, Self, [.. audited.Order()], setup.MaskBlocks, key, setup.ClientInbox), Self);
        // Shards dealt to nodes go in locality order: each node then takes its own in the order its block store serves best.
        foreach (var shard in setup.Homes is null ? setup.Plan.Shards : Locality.Ordered(setup.Geometry, setup.Plan.Shards))
        {
            shards[shard.Id] = new ShardState(shard, audited.Contains(shard.Id));
            setup.Queue.Tell(Work(shard, 1), Self);
        }

        if (setup.Homes is not null)
        {
            setup.Queue.Tell(new ShardsSent(job), Self);
        }

        Timers.StartPeriodicTimer("stall", new StallCheck(), options.StallTimeout / 4);
        if (setup.Plan.Shards.Count == 0)
        {
            End();
        }
    }

    /// <summary>Whether shard <paramref name="id"/> is audited: a fixed hash of the id below the fraction.</summary>
    public static bool Covers(double fraction, int id) => fraction >= 1 || (uint)(id * 2654435761u) < fraction * 4294967296.0;

    /// <summary>A crashed coordinator has lost track of its shards: the job fails rather than start over unseen.</summary>
    protected override void PreRestart(Exception reason, object message)
    {
        Fail($"the coordinator of job {job} crashed: {reason.GetType().Name}: {reason.Message}");
        base.PreRestart(reason, message);
    }

    private void Dispatching()
    {
        Receive<ShardDispatched>(dispatched =>
        {
            lastActivity = Now;
            if (shards.TryGetValue(dispatched.ShardId, out var state))
            {
                state.Workers[dispatched.Attempt] = dispatched.Worker;
                if (state.Attempt == dispatched.Attempt && !state.Done)
                {
                    StartDeadline(state);
                }
            }
        });
        Receive<ShardStarted>(started =>
        {
            lastActivity = Now;
            if (Current(started.ShardId, started.Attempt) is { } state && Grants.Valid(key, job, started.ShardId, started.Attempt, started.Grant))
            {
                state.Started = true;
                StartDeadline(state);
            }
        });
        Receive<ShardMerged>(OnMerged, _ => Sender.Equals(setup.Reducer));
        Receive<AuditMismatch>(OnMismatch, _ => Sender.Equals(setup.Reducer));
        Receive<ShardDeadline>(late =>
        {
            if (Current(late.ShardId, late.Attempt) is { } state)
            {
                Retry(state, $"{state.Shard} missed its {options.DeadlineFor(state.Shard).TotalSeconds:F1} s deadline");
            }
        });
        Receive<ShardFailed>(failed =>
        {
            // Only the current attempt's failure counts, and only from whoever holds its grant: its worker, or the reducer that refused its result.
            if (Current(failed.ShardId, failed.Attempt) is { } state && Grants.Valid(key, job, failed.ShardId, failed.Attempt, failed.Grant))
            {
                switch (failed.Kind)
                {
                    case ShardFailure.StoreUnreachable:
                        Fail($"the job's tensors cannot be fetched from its client ({failed.Error}): the client is gone");
                        break;
                    case ShardFailure.ReducerUnreachable:
                        Fail($"the job's reducer cannot be reached ({failed.Error}) and its partials are lost", nodeLost: true);
                        break;
                    default:
                        Retry(state, $"{state.Shard} failed: {failed.Error}");
                        break;
                }
            }
            else
            {
                LogIgnoredFailure(logger, job, failed.ShardId, failed.Attempt, Sender, failed.Error);
            }
        });
        Receive<ShardUndeliverable>(undeliverable =>
        {
            if (shards.TryGetValue(undeliverable.ShardId, out var state))
            {
                Fail($"audit of {state.Shard}: {undeliverable.Reason}");
            }
        });
        Receive<NodeUnreachable>(lost =>
        {
            // (A reducer in this process has no address of its own to lose.)
            if (lost.Address.HasGlobalScope && setup.Reducer.Path.Address.Equals(lost.Address))
            {
                Fail($"the job's reducer on {lost.Address} stopped answering heartbeats and its partials are lost", nodeLost: true);
                return;
            }

            // Heartbeats say the node is gone: its attempts are re-issued now, not at their deadlines. Only
            // an attempt that had started counts against its shard: one still waiting there for a thread
            // cannot have killed the node (a shard that kills every node it runs on fails its job; one that
            // queued behind it must not).
            foreach (var state in shards.Values.Where(s => !s.Done && WorkerOf(s, s.Attempt)?.Path.Address.Equals(lost.Address) == true).ToList())
            {
                Retry(state, $"{state.Shard} was {(state.Started ? "running" : "waiting")} on {lost.Address}, which stopped answering heartbeats", charge: state.Started);
            }
        });
        Receive<CancelJob>(cancel => Fail(cancel.Reason, cancelled: true), _ => Sender.Equals(setup.Client) || Sender.Equals(setup.Reducer) || Sender.Equals(Context.Parent));
        Receive<JobStatusQuery>(_ => Sender.Tell(new JobStatusReport(job, done, shards.Count, [.. shards.Values.SelectMany(s => s.Workers.Values).Select(w => w.Path.Address.ToString()).Distinct().Order()])));
        Receive<StallCheck>(_ =>
        {
            if (Now - lastActivity > options.StallTimeout)
            {
                Fail($"no shard started or finished for {options.StallTimeout.TotalSeconds:F0} s ({done} of {shards.Count} shards done); are any workers running?");
            }
        });
    }

    private void Finished() => ReceiveAny(_ => { });

    private void OnMerged(ShardMerged merged)
    {
        lastActivity = Now;
        if (!shards.TryGetValue(merged.ShardId, out var state))
        {
            return;
        }

        if (merged.Attempt >= AuditAttempts)
        {
            if (state.Audited && state.Done)
            {
                state.Audited = false;
                audits--;
                EndIfDone();
            }

            return;
        }

        if (state.Done)
        {
            return;
        }

        state.Done = true;
        Timers.Cancel(("deadline", state.Shard.Id));
        if (state.Audited)
        {
            // The second computation must run on another node than the one whose result was merged.
            var first = WorkerOf(state, merged.Attempt);
            int attempt = AuditAttempts + merged.Attempt;
            setup.Queue.Tell(Work(state.Shard, attempt) with { Avoid = first?.Path.Address.ToString() ?? "" }, Self);
        }

        done++;
        EndIfDone();
    }

    private void OnMismatch(AuditMismatch mismatch)
    {
        if (!shards.TryGetValue(mismatch.ShardId, out var state))
        {
            return;
        }

        string first = WorkerOf(state, mismatch.FirstAttempt)?.Path.Address.ToString() ?? "an unknown node";
        string second = WorkerOf(state, mismatch.AuditAttempt)?.Path.Address.ToString() ?? "an unknown node";
        Fail($"audit failed: {state.Shard} computed on {first} and again on {second} gave different bits ({mismatch.Detail}); one of these machines computes wrongly");
    }

    private void EndIfDone()
    {
        if (done == shards.Count && audits == 0)
        {
            End();
        }
    }

    private static IActorRef? WorkerOf(ShardState state, int attempt) => state.Workers.GetValueOrDefault(attempt);

    private void StartDeadline(ShardState state)
        => Timers.StartSingleTimer(("deadline", state.Shard.Id), new ShardDeadline(state.Shard.Id, state.Attempt), options.DeadlineFor(state.Shard));

    /// <summary>The state of a shard still running as <paramref name="attempt"/>, or null.</summary>
    private ShardState? Current(int shardId, int attempt)
        => shards.TryGetValue(shardId, out var state) && !state.Done && state.Attempt == attempt ? state : null;

    private ComputeShard Work(Shard shard, int attempt)
        => new(job, shard, attempt, setup.Geometry, setup.Inputs?.Invoke(shard), setup.Store, Grants.For(key, job, shard.Id, attempt), setup.Reducer, setup.ResultsTo, Self, Home: attempt == 1 && setup.Homes is { } homes ? homes[shard.Id] : "");

    /// <summary>
    /// Re-issues a shard as a new attempt, or fails the job once its attempts are used up. With
    /// <paramref name="charge"/> false the failure is not the shard's (it never ran): it gets a new
    /// attempt number, so a late answer is still told apart, without using one of its attempts.
    /// </summary>
    private void Retry(ShardState state, string why, bool charge = true)
    {
        Timers.Cancel(("deadline", state.Shard.Id));
        if (charge && ++state.Charged >= options.MaxAttempts)
        {
            Fail($"{why} (attempt {state.Charged} of {options.MaxAttempts}); giving up");
            return;
        }

        state.Attempt++;
        state.Started = false;
        LogRetry(logger, job, why, state.Attempt);
        setup.Queue.Tell(Work(state.Shard, state.Attempt), Self);
    }

    private void Fail(string reason, bool cancelled = false, bool nodeLost = false)
    {
        if (cancelled)
        {
            LogCancelled(logger, job, reason);
        }
        else
        {
            LogFailed(logger, job, reason);
        }

        setup.Client.Tell(new AttentionFailed(job, reason, cancelled, nodeLost), Self);
        setup.Reducer.Tell(new FailJob(job, reason), Self);
        End(reason);
    }

    /// <summary>Withdraws the job's queued shards and interrupts running ones, then stops.</summary>
    private void End(string why = "completed")
    {
        setup.Queue.Tell(new JobEnded(job, why), Self);
        Become(Finished);
        Context.Stop(Self);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "job {Job}: {Why}; re-issuing as attempt {Attempt}")]
    private static partial void LogRetry(ILogger logger, JobId job, string why, int attempt);

    [LoggerMessage(Level = LogLevel.Debug, Message = "job {Job}: ignoring a failure of shard {ShardId} attempt {Attempt} from {Sender} (not the current attempt, or without its grant): {Error}")]
    private static partial void LogIgnoredFailure(ILogger logger, JobId job, int shardId, int attempt, IActorRef sender, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} cancelled: {Reason}")]
    private static partial void LogCancelled(ILogger logger, JobId job, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "job {Job} failed: {Reason}")]
    private static partial void LogFailed(ILogger logger, JobId job, string reason);
}
