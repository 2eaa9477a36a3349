using AttentionActors.Actors;
using AttentionActors.Actors.TestKit;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reducer;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Pipeline.Tests;

/// <summary>Each role driven by probes.</summary>
public sealed class RoleTests : IAsyncLifetime
{
    private readonly ActorSystem system = ActorSystem.Create("roles");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await system.TerminateAsync(TimeSpan.Zero);

    private static (AttentionProblem Problem, ShardPlan Plan, PartialComputed[] Partials) Computed(int seed)
    {
        var (q, k, v) = TestData.Qkv(seed, 1, 3, 1, 400, 1500, 16, 16);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 });
        var plan = ShardPlanner.Plan(problem, 5, new PlanOptions { MaxShardBytes = 40 << 10 });
        var job = new JobId("j");
        var partials = plan.Shards.Select(s => new PartialComputed(job, s.Id, 1, Attention.ComputePartials(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd), TimeSpan.Zero)).ToArray();
        return (problem, plan, partials);
    }

    [Fact]
    public void Reducer_merges_partials_in_tree_order_whatever_the_arrival_order()
    {
        var (problem, plan, partials) = Computed(1);
        Assert.True(plan.Shards.Any(s => s.BlockStart > 0), "the plan must contain key-range splits");
        var single = Attention.Compute(problem);
        var rng = new Random(5);
        for (int trial = 0; trial < 5; trial++)
        {
            var client = new TestProbe(system, "client");
            var coordinator = new TestProbe(system, "coordinator");
            var reducer = system.ActorOf(Props.Create(() => new Reducer.Reducer()), $"reducer-{trial}");
            reducer.Tell(new ExpectShards(new JobId("j"), problem, plan.Shards, client, coordinator));
            foreach (var p in partials.OrderBy(_ => rng.Next()))
            {
                reducer.Tell(p);
            }

            var done = client.FishForMessage<AttentionCompleted>(_ => true);
            TestData.AssertBitwise(single.Output.Data.Span, done.Result.Output.Data.Span, $"arrival order #{trial}");
            TestData.AssertBitwise(single.Lse, done.Result.Lse, $"arrival order #{trial}, lse");
        }
    }

    [Fact]
    public void Reducer_drops_a_duplicate_shard_by_id()
    {
        var (problem, plan, partials) = Computed(2);
        var client = new TestProbe(system, "client");
        var coordinator = new TestProbe(system, "coordinator");
        var reducer = system.ActorOf(Props.Create(() => new Reducer.Reducer()), "dedupe");
        reducer.Tell(new ExpectShards(new JobId("j"), problem, plan.Shards, client, coordinator));
        reducer.Tell(partials[0]);

        // A second delivery of shard 0 carrying different numbers must change nothing.
        var tampered = new PartialSet(partials[0].Partials.Nodes, partials[0].Partials.Rows, partials[0].Partials.ValueDim);
        Array.Fill(tampered.M, 3f);
        Array.Fill(tampered.L, 7f);
        Array.Fill(tampered.O, 1e6f);
        reducer.Tell(partials[0] with { Attempt = 2, Partials = tampered });
        foreach (var p in partials.Skip(1))
        {
            reducer.Tell(p);
        }

        var done = client.FishForMessage<AttentionCompleted>(_ => true);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, done.Result.Output.Data.Span, "after a duplicate");
        var merged = new List<int>();
        while (merged.Count < plan.Shards.Count)
        {
            merged.Add(coordinator.ExpectMsg<ShardMerged>().ShardId);
        }

        Assert.Equal(plan.Shards.Count, merged.Distinct().Count());
        coordinator.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Reducer_reports_invalid_partials_as_a_failed_shard_and_never_merges_them()
    {
        var (problem, plan, partials) = Computed(3);
        var client = new TestProbe(system, "client");
        var coordinator = new TestProbe(system, "coordinator");
        var reducer = system.ActorOf(Props.Create(() => new Reducer.Reducer()), "validating");
        reducer.Tell(new ExpectShards(new JobId("j"), problem, plan.Shards, client, coordinator));
        var bad = partials[1].Partials;
        var poisoned = new PartialSet(bad.Nodes, bad.Rows, bad.ValueDim, bad.M, bad.L, (float[])bad.O.Clone());
        poisoned.O[5] = float.NaN;
        reducer.Tell(partials[1] with { Partials = poisoned });
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal(partials[1].ShardId, failed.ShardId);
        Assert.Contains("NaN", failed.Error, StringComparison.Ordinal);

        reducer.Tell(partials[1] with { Partials = new PartialSet(bad.Nodes, bad.Rows - 1, bad.ValueDim) });
        Assert.Contains("rows", coordinator.ExpectMsg<ShardFailed>().Error, StringComparison.Ordinal);

        // The real partials are still accepted afterwards and the result is exact.
        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var done = client.FishForMessage<AttentionCompleted>(_ => true);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, done.Result.Output.Data.Span, "after rejected partials");
    }

    [Fact]
    public void Coordinator_reissues_a_late_shard_then_fails_the_job_naming_it()
    {
        var (problem, plan, _) = Computed(4);
        var queue = new TestProbe(system, "queue");
        var reducer = new TestProbe(system, "reducer");
        var client = new TestProbe(system, "client");
        var job = new JobId("late");
        var settings = new JobSettings { ShardTimeout = TimeSpan.FromMilliseconds(150), MinWorkerFlops = 1e18, MaxAttempts = 2 };
        var coordinator = system.ActorOf(Props.Create(() => new JobCoordinator(job, problem, plan, queue, reducer, client, settings, NullLogger.Instance)), "coordinator-late");
        reducer.ExpectMsg<ExpectShards>();
        var first = queue.ExpectMsg<ComputeShard>();
        for (int i = 1; i < plan.Shards.Count; i++)
        {
            queue.ExpectMsg<ComputeShard>();
        }

        coordinator.Tell(new ShardStarted(job, first.Shard.Id, 1));
        var again = queue.ExpectMsg<ComputeShard>(TimeSpan.FromSeconds(3));
        Assert.Equal((first.Shard.Id, 2), (again.Shard.Id, again.Attempt));

        coordinator.Tell(new ShardStarted(job, first.Shard.Id, 2));
        var fail = reducer.ExpectMsg<FailJob>(TimeSpan.FromSeconds(3));
        Assert.Contains($"shard {first.Shard.Id} ", fail.Reason, StringComparison.Ordinal);
        Assert.Contains("deadline", fail.Reason, StringComparison.Ordinal);
        Assert.Equal(job, queue.ExpectMsg<CancelShards>().Job);
    }

    [Fact]
    public void Coordinator_stops_on_cancellation_and_withdraws_queued_shards()
    {
        var (problem, plan, _) = Computed(5);
        var queue = new TestProbe(system, "queue");
        var reducer = new TestProbe(system, "reducer");
        var job = new JobId("cancel");
        var coordinator = system.ActorOf(Props.Create(() => new JobCoordinator(job, problem, plan, queue, reducer, new TestProbe(system), new JobSettings(), NullLogger.Instance)), "coordinator-cancel");
        var watcher = new TestProbe(system, "watcher");
        watcher.Watch(coordinator);
        coordinator.Tell(new CancelJob(job, "user pressed ctrl-c"));
        Assert.Equal("user pressed ctrl-c", reducer.FishForMessage<FailJob>(_ => true).Reason);
        queue.FishForMessage<CancelShards>(c => c.Job == job);
        watcher.ExpectMsg<Terminated>();
    }

    [Fact]
    public void Queue_gives_each_idle_worker_one_shard_and_reissues_first()
    {
        var (problem, plan, _) = Computed(6);
        var queue = system.ActorOf(Props.Create(() => new ShardQueue()), "queue-order");
        var workerA = new TestProbe(system, "a");
        var workerB = new TestProbe(system, "b");
        var job = new JobId("q");
        var s = plan.Shards;
        queue.Tell(new ComputeShard(job, s[0], 1, problem, workerA, workerA));
        queue.Tell(new ComputeShard(job, s[1], 1, problem, workerA, workerA));
        queue.Tell(new ComputeShard(job, s[2], 2, problem, workerA, workerA));
        workerA.Send(queue, new WorkerReady());
        Assert.Equal(s[2].Id, workerA.ExpectMsg<ComputeShard>().Shard.Id);
        workerA.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        workerB.Send(queue, new WorkerReady());
        Assert.Equal(s[0].Id, workerB.ExpectMsg<ComputeShard>().Shard.Id);
        queue.Tell(new CancelShards(job));
        workerA.Send(queue, new WorkerReady());
        workerA.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }
}
