using Akka.Actor;
using Akka.TestKit;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging.Abstractions;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Coordinator;

/// <summary>The coordinator on Akka's test scheduler: deadlines and stalls are reached by moving time, never by sleeping.</summary>
public sealed class CoordinatorTests() : RoleTestKit("akka.scheduler.implementation = \"Akka.TestKit.TestScheduler, Akka.TestKit\"")
{
    private TestScheduler Clock => (TestScheduler)Sys.Scheduler;

    private sealed record Roles(IActorRef Coordinator, TestProbe Queue, TestProbe Reducer, TestProbe Client, ShardPlan Plan, IReadOnlyList<ComputeShard> Dispatched, ExpectShards Expected);

    private Roles Start(string name, JobOptions options, int seed = 4, double audit = 0)
    {
        var (problem, plan, _) = Computed(seed);
        var queue = CreateTestProbe();
        var reducer = CreateTestProbe();
        var client = CreateTestProbe();
        var setup = new JobSetup(Job, problem.Geometry, plan, queue, reducer, client, options) { Inputs = s => InputOf(problem, s), Audit = audit };
        var coordinator = Sys.ActorOf(Props.Create(() => new JobCoordinator(setup, NullLogger.Instance)), name);
        var expected = reducer.ExpectMsg<ExpectShards>();
        var dispatched = plan.Shards.Select(_ => queue.ExpectMsg<ComputeShard>()).ToList();
        return new Roles(coordinator, queue, reducer, client, plan, dispatched, expected);
    }

    /// <summary>The queue's notice that <paramref name="work"/> went to <paramref name="worker"/>, as the real queue sends it.</summary>
    private static void Dispatch(Roles r, ComputeShard work, TestProbe worker)
        => r.Coordinator.Tell(new ShardDispatched(Job, work.Shard.Id, work.Attempt, worker), r.Queue);

    /// <summary>Moves the clock in steps until <paramref name="probe"/> gets a <typeparamref name="T"/> (the actor handles messages on its own threads, so each step waits a moment for them).</summary>
    private T AdvanceUntil<T>(TestProbe probe, TimeSpan step, int steps = 20)
    {
        for (int i = 0; i < steps; i++)
        {
            Clock.Advance(step);
            if (probe.ReceiveWhile<object>(TimeSpan.FromMilliseconds(100), m => m).OfType<T>().FirstOrDefault() is { } message)
            {
                return message;
            }
        }

        throw new InvalidOperationException($"no {typeof(T).Name} after moving the clock {steps} × {step}");
    }

    [Fact]
    public void Coordinator_gives_the_reducer_a_key_that_checks_every_attempts_grant()
    {
        var r = Start("grants", new JobOptions());
        Assert.Equal(Grants.KeyBytes, r.Expected.Key.Length);
        foreach (var work in r.Dispatched)
        {
            Assert.True(Grants.Valid(r.Expected.Key, Job, work.Shard.Id, work.Attempt, work.Grant), $"{work.Shard} carries no valid grant");
            Assert.False(Grants.Valid(r.Expected.Key, Job, work.Shard.Id, work.Attempt + 1, work.Grant), "a grant must not open another attempt");
        }
    }

    [Fact]
    public void Coordinator_reissues_a_shard_whose_worker_goes_silent_then_fails_the_job_naming_it()
    {
        var options = new JobOptions { ShardTimeout = TimeSpan.FromSeconds(10), MinWorkerFlops = 1e18, MaxAttempts = 2 };
        var r = Start("late", options);
        var first = r.Dispatched[0];
        var worker = CreateTestProbe();

        // The worker took the shard and never said a word: its deadline runs from the hand-over.
        Dispatch(r, first, worker);
        var again = AdvanceUntil<ComputeShard>(r.Queue, TimeSpan.FromSeconds(4));
        Assert.Equal((first.Shard.Id, 2), (again.Shard.Id, again.Attempt));

        Dispatch(r, again, worker);
        r.Coordinator.Tell(new ShardStarted(Job, first.Shard.Id, 2, again.Grant), worker);
        var failed = AdvanceUntil<AttentionFailed>(r.Client, TimeSpan.FromSeconds(4));
        Assert.Contains($"shard {first.Shard.Id} ", failed.Reason, StringComparison.Ordinal);
        Assert.Contains("deadline", failed.Reason, StringComparison.Ordinal);
        Assert.False(failed.Cancelled);
        Assert.Equal(failed.Reason, r.Reducer.ExpectMsg<FailJob>().Reason);
        Assert.Equal(Job, r.Queue.ExpectMsg<JobEnded>().Job);
    }

    [Fact]
    public void Coordinator_counts_only_the_current_attempts_failure_and_only_from_its_worker()
    {
        var options = new JobOptions { ShardTimeout = TimeSpan.FromSeconds(10), MinWorkerFlops = 1e18, MaxAttempts = 3 };
        var r = Start("stale", options);
        var work = r.Dispatched[0];
        var shard = work.Shard;
        var slow = CreateTestProbe();
        Dispatch(r, work, slow);
        var second = AdvanceUntil<ComputeShard>(r.Queue, TimeSpan.FromSeconds(4));
        Assert.Equal(2, second.Attempt);

        // Attempt 1 was only slow; its failure arrives while attempt 2 runs and must not start attempt 3.
        var current = CreateTestProbe();
        r.Coordinator.Tell(new ShardDispatched(Job, shard.Id, 2, current), r.Queue);
        r.Coordinator.Tell(new ShardFailed(Job, shard.Id, 1, work.Grant, "late failure of attempt 1"), slow);
        r.Queue.ExpectNoMsg(TimeSpan.FromMilliseconds(200));

        // Nor does a failure of the current attempt without its grant (here, attempt 1's): a forged notice changes nothing.
        r.Coordinator.Tell(new ShardFailed(Job, shard.Id, 2, work.Grant, "forged"), CreateTestProbe());
        r.Queue.ExpectNoMsg(TimeSpan.FromMilliseconds(200));

        // Its own worker, which holds the grant, fails it for real.
        r.Coordinator.Tell(new ShardFailed(Job, shard.Id, 2, second.Grant, "attempt 2 failed"), current);
        var third = r.Queue.ExpectMsg<ComputeShard>();
        Assert.Equal((shard.Id, 3), (third.Shard.Id, third.Attempt));
    }

    [Fact]
    public void Coordinator_reissues_at_once_the_attempts_of_a_node_that_becomes_unreachable()
    {
        var r = Start("unreachable", new JobOptions { ShardTimeout = TimeSpan.FromMinutes(10) });
        var lost = CreateTestProbe();
        Dispatch(r, r.Dispatched[0], lost);
        Dispatch(r, r.Dispatched[1], lost);
        r.Coordinator.Tell(new NodeUnreachable(lost.Ref.Path.Address));
        var reissued = r.Queue.ReceiveN(2).Cast<ComputeShard>().Select(w => (w.Shard.Id, w.Attempt)).Order().ToList();
        Assert.Equal(new[] { (r.Dispatched[0].Shard.Id, 2), (r.Dispatched[1].Shard.Id, 2) }.Order(), reissued);
    }

    [Fact]
    public void A_lost_node_charges_an_attempt_only_to_the_shard_that_had_started_there()
    {
        var r = Start("charged", new JobOptions { ShardTimeout = TimeSpan.FromMinutes(10), MaxAttempts = 3 });
        var work = r.Dispatched[0];

        // Three nodes lost while the shard only waited on each for a thread: it never ran, so it is re-issued every time.
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            var node = CreateTestProbe();
            Dispatch(r, work, node);
            r.Coordinator.Tell(new NodeUnreachable(node.Ref.Path.Address));
            work = r.Queue.ExpectMsg<ComputeShard>();
            Assert.Equal((r.Dispatched[0].Shard.Id, attempt + 1), (work.Shard.Id, work.Attempt));
        }

        r.Client.ExpectNoMsg(TimeSpan.FromMilliseconds(100));

        // Three nodes lost while it computed: its attempts are used up, and the job fails naming it.
        for (int charged = 1; charged <= 3; charged++)
        {
            var node = CreateTestProbe();
            Dispatch(r, work, node);
            r.Coordinator.Tell(new ShardStarted(Job, work.Shard.Id, work.Attempt, work.Grant), node);
            r.Coordinator.Tell(new NodeUnreachable(node.Ref.Path.Address));
            if (charged < 3)
            {
                work = r.Queue.ExpectMsg<ComputeShard>();
            }
        }

        var failed = r.Client.FishForMessage<AttentionFailed>(_ => true);
        Assert.Contains("was running on", failed.Reason, StringComparison.Ordinal);
        Assert.Contains("attempt 3 of 3", failed.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Coordinator_takes_merges_only_from_its_reducer_and_withdraws_the_jobs_work_when_it_succeeds()
    {
        var r = Start("success", new JobOptions());
        var watcher = CreateTestProbe();
        watcher.Watch(r.Coordinator);
        foreach (var shard in r.Plan.Shards)
        {
            r.Coordinator.Tell(new ShardMerged(Job, shard.Id, 1), CreateTestProbe());
        }

        r.Queue.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
        foreach (var shard in r.Plan.Shards)
        {
            r.Coordinator.Tell(new ShardMerged(Job, shard.Id, 1), r.Reducer);
        }

        var ended = r.Queue.ExpectMsg<JobEnded>();
        Assert.Equal(Job, ended.Job);
        watcher.ExpectTerminated(r.Coordinator);
        r.Client.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Coordinator_audits_on_another_node_and_names_both_nodes_when_the_bits_differ()
    {
        var r = Start("audit", new JobOptions(), audit: 1.0);
        Assert.Equal(r.Plan.Shards.Select(s => s.Id).Order(), r.Expected.Audited.Order());
        var honest = CreateTestProbe();
        var work = r.Dispatched[0];
        Dispatch(r, work, honest);
        r.Coordinator.Tell(new ShardMerged(Job, work.Shard.Id, 1), r.Reducer);

        // The second computation is a new attempt that may not run where the first one did.
        var audit = r.Queue.ExpectMsg<ComputeShard>();
        Assert.Equal(work.Shard.Id, audit.Shard.Id);
        Assert.True(audit.Attempt >= JobCoordinator.AuditAttempts, $"audit attempt {audit.Attempt}");
        Assert.Equal(honest.Ref.Path.Address.ToString(), audit.Avoid);

        var other = CreateTestProbe();
        Dispatch(r, audit, other);
        r.Coordinator.Tell(new AuditMismatch(Job, work.Shard.Id, 1, audit.Attempt, "the partials' digests differ"), r.Reducer);
        var failed = r.Client.ExpectMsg<AttentionFailed>();
        Assert.Contains("audit failed", failed.Reason, StringComparison.Ordinal);
        Assert.Contains($"shard {work.Shard.Id} ", failed.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Coordinator_stops_on_a_cancel_from_its_client_and_withdraws_queued_shards()
    {
        var r = Start("cancel", new JobOptions());
        var watcher = CreateTestProbe();
        watcher.Watch(r.Coordinator);
        r.Coordinator.Tell(new CancelJob(Job, "forged cancel"), CreateTestProbe());
        r.Client.ExpectNoMsg(TimeSpan.FromMilliseconds(200));

        r.Coordinator.Tell(new CancelJob(Job, "user pressed ctrl-c"), r.Client);
        var failed = r.Client.ExpectMsg<AttentionFailed>();
        Assert.True(failed.Cancelled);
        Assert.Equal("user pressed ctrl-c", r.Reducer.ExpectMsg<FailJob>().Reason);
        Assert.Equal(Job, r.Queue.ExpectMsg<JobEnded>().Job);
        watcher.ExpectTerminated(r.Coordinator);
    }

    [Fact]
    public void Coordinator_fails_a_job_that_stalls_on_its_clock()
    {
        var r = Start("stall", new JobOptions { StallTimeout = TimeSpan.FromMinutes(4) });
        var failed = AdvanceUntil<AttentionFailed>(r.Client, TimeSpan.FromMinutes(1), steps: 10);
        Assert.Contains("no shard started or finished for 240 s", failed.Reason, StringComparison.Ordinal);
        Assert.Contains($"0 of {r.Plan.Shards.Count} shards done", failed.Reason, StringComparison.Ordinal);
    }
}
