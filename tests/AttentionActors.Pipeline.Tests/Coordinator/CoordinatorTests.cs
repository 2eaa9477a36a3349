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

/// <summary>The coordinator on a manual clock: deadlines and stalls are reached by moving time, never by sleeping.</summary>
public sealed class CoordinatorTests() : RoleTestKit("akka.scheduler.implementation = \"Akka.TestKit.TestScheduler, Akka.TestKit\"")
{
    private TestScheduler Clock => (TestScheduler)Sys.Scheduler;

    private sealed record Roles(IActorRef Coordinator, TestProbe Queue, TestProbe Reducer, TestProbe Client, ShardPlan Plan, IReadOnlyList<ComputeShard> Dispatched);

    private Roles Start(string name, JobOptions options, int seed = 4)
    {
        var (problem, plan, _) = Computed(seed);
        var queue = CreateTestProbe();
        var reducer = CreateTestProbe();
        var client = CreateTestProbe();
        var coordinator = Sys.ActorOf(Props.Create(() => new JobCoordinator(Job, problem.Geometry, plan, s => InputOf(problem, s), queue, reducer, client, options, NullLogger.Instance)), name);
        reducer.ExpectMsg<ExpectShards>();
        var dispatched = plan.Shards.Select(_ => queue.ExpectMsg<ComputeShard>()).ToList();
        return new Roles(coordinator, queue, reducer, client, plan, dispatched);
    }

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
    public void Coordinator_reissues_a_late_shard_then_fails_the_job_naming_it_and_tells_the_client()
    {
        var options = new JobOptions { ShardTimeout = TimeSpan.FromSeconds(10), MinWorkerFlops = 1e18, MaxAttempts = 2 };
        var r = Start("late", options);
        var first = r.Dispatched[0];
        r.Coordinator.Tell(new ShardStarted(Job, first.Shard.Id, 1));
        var again = AdvanceUntil<ComputeShard>(r.Queue, TimeSpan.FromSeconds(4));
        Assert.Equal((first.Shard.Id, 2), (again.Shard.Id, again.Attempt));

        r.Coordinator.Tell(new ShardStarted(Job, first.Shard.Id, 2));
        var failed = AdvanceUntil<AttentionFailed>(r.Client, TimeSpan.FromSeconds(4));
        Assert.Contains($"shard {first.Shard.Id} ", failed.Reason, StringComparison.Ordinal);
        Assert.Contains("deadline", failed.Reason, StringComparison.Ordinal);
        Assert.False(failed.Cancelled);
        Assert.Equal(failed.Reason, r.Reducer.ExpectMsg<FailJob>().Reason);
        Assert.Equal(Job, r.Queue.ExpectMsg<JobEnded>().Job);
    }

    [Fact]
    public void Coordinator_ignores_a_stale_failure_of_an_attempt_already_replaced()
    {
        var options = new JobOptions { ShardTimeout = TimeSpan.FromSeconds(10), MinWorkerFlops = 1e18, MaxAttempts = 3 };
        var r = Start("stale", options);
        var shard = r.Dispatched[0].Shard;
        r.Coordinator.Tell(new ShardStarted(Job, shard.Id, 1));
        Assert.Equal(2, AdvanceUntil<ComputeShard>(r.Queue, TimeSpan.FromSeconds(4)).Attempt);

        // Attempt 1 was only slow; its failure arrives while attempt 2 runs and must not start attempt 3.
        r.Coordinator.Tell(new ShardStarted(Job, shard.Id, 2));
        r.Coordinator.Tell(new ShardFailed(Job, shard.Id, 1, "late failure of attempt 1"));
        r.Queue.ExpectNoMsg(TimeSpan.FromMilliseconds(200));

        // A failure of the current attempt still counts.
        r.Coordinator.Tell(new ShardFailed(Job, shard.Id, 2, "attempt 2 failed"));
        var third = r.Queue.ExpectMsg<ComputeShard>();
        Assert.Equal((shard.Id, 3), (third.Shard.Id, third.Attempt));
    }

    [Fact]
    public void Coordinator_withdraws_the_jobs_work_when_it_succeeds()
    {
        var r = Start("success", new JobOptions());
        var watcher = CreateTestProbe();
        watcher.Watch(r.Coordinator);
        foreach (var shard in r.Plan.Shards)
        {
            r.Coordinator.Tell(new ShardMerged(Job, shard.Id));
        }

        var ended = r.Queue.ExpectMsg<JobEnded>();
        Assert.Equal(Job, ended.Job);
        watcher.ExpectTerminated(r.Coordinator);
        r.Client.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Coordinator_stops_on_cancellation_and_withdraws_queued_shards()
    {
        var r = Start("cancel", new JobOptions());
        var watcher = CreateTestProbe();
        watcher.Watch(r.Coordinator);
        r.Coordinator.Tell(new CancelJob(Job, "user pressed ctrl-c"));
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
