using Akka.Actor;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Workers;

public sealed class WorkerTests : RoleTestKit
{
    [Fact]
    public void Worker_abandons_a_running_shard_when_its_job_ends()
    {
        var (problem, plan, _) = Computed(11);
        using var started = new ManualResetEventSlim();
        using var interrupted = new ManualResetEventSlim();
        ShardComputer blocking = (input, shard, attempt, ct) =>
        {
            started.Set();
            if (ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(30)))
            {
                interrupted.Set();
            }

            ct.ThrowIfCancellationRequested();
            return new PartialSet([], input.RowCount, input.Geometry.ValueDim);
        };
        var queue = CreateTestProbe();
        var reducer = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, new WorkerServices { Compute = blocking })), "interrupted");
        queue.ExpectMsg<WorkerReady>();
        var shard = plan.Shards[0];
        worker.Tell(Work(problem, shard, 1, reducer, coordinator), queue);
        Assert.Equal(shard.Id, coordinator.ExpectMsg<ShardStarted>().ShardId);
        Assert.True(started.Wait(TimeSpan.FromSeconds(5)), "the shard never started");

        // The job ends by message; the kernel running on another thread must be told.
        worker.Tell(new JobEnded(Job, "cancelled"), queue);
        Assert.True(interrupted.Wait(TimeSpan.FromSeconds(5)), "the running shard was not interrupted");
        queue.ExpectMsg<WorkerReady>();
        reducer.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        coordinator.ExpectNoMsg(TimeSpan.FromMilliseconds(100));

        // Work of the ended job that still arrives is skipped, not computed.
        started.Reset();
        worker.Tell(Work(problem, plan.Shards[1], 2, reducer, coordinator), queue);
        queue.ExpectMsg<WorkerReady>();
        Assert.False(started.IsSet, "a shard of an ended job was computed");
        coordinator.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Worker_reports_a_failing_shard_as_text_to_its_coordinator()
    {
        var (problem, plan, _) = Computed(12);
        var queue = CreateTestProbe();
        var coordinator = CreateTestProbe();
        ShardComputer failing = (_, _, _, _) => throw new IOException("disk on fire");
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, new WorkerServices { Compute = failing })), "failing");
        queue.ExpectMsg<WorkerReady>();
        worker.Tell(Work(problem, plan.Shards[0], 2, CreateTestProbe(), coordinator), queue);
        coordinator.ExpectMsg<ShardStarted>();
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal((plan.Shards[0].Id, 2, "IOException: disk on fire"), (failed.ShardId, failed.Attempt, failed.Error));
        queue.ExpectMsg<WorkerReady>();
    }

    [Fact]
    public void Worker_computes_from_the_shards_own_data_the_same_bits()
    {
        var (problem, plan, partials) = Computed(13);
        var queue = CreateTestProbe();
        var reducer = CreateTestProbe();
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, new WorkerServices())), "kernel");
        queue.ExpectMsg<WorkerReady>();
        foreach (var shard in plan.Shards)
        {
            // The input is a copy, as it would come over the wire: nothing of the whole tensors is reachable.
            var view = InputOf(problem, shard);
            var copy = view with { Q = view.Q.ToArray(), K = view.K.ToArray(), V = view.V.ToArray() };
            worker.Tell(Work(problem, shard, 1, reducer, CreateTestProbe(), copy), queue);
            var computed = reducer.ExpectMsg<PartialComputed>().Partials;
            var expected = partials[shard.Id].Partials;
            Assert.Equal(expected.Nodes, computed.Nodes);
            Kernels.Tests.TestData.AssertBitwise(expected.O, computed.O, $"{shard}, o");
            Kernels.Tests.TestData.AssertBitwise(expected.M, computed.M, $"{shard}, m");
            Kernels.Tests.TestData.AssertBitwise(expected.L, computed.L, $"{shard}, l");
            queue.ExpectMsg<WorkerReady>();
        }
    }

    [Fact]
    public void Queue_gives_each_idle_worker_one_shard_reissues_first_and_tells_the_coordinator_first()
    {
        var (problem, plan, _) = Computed(6);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-order");
        var coordinator = CreateTestProbe();
        var workerA = CreateTestProbe();
        var workerB = CreateTestProbe();
        var s = plan.Shards;
        queue.Tell(Work(problem, s[0], 1, workerA, coordinator));
        queue.Tell(Work(problem, s[1], 1, workerA, coordinator));
        queue.Tell(Work(problem, s[2], 2, workerA, coordinator));
        workerA.Send(queue, new WorkerReady());
        var dispatched = coordinator.ExpectMsg<ShardDispatched>();
        Assert.Equal((s[2].Id, 2, workerA.Ref), (dispatched.ShardId, dispatched.Attempt, dispatched.Worker));
        Assert.Equal(s[2].Id, workerA.ExpectMsg<ComputeShard>().Shard.Id);
        workerA.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        workerB.Send(queue, new WorkerReady());
        Assert.Equal(s[0].Id, workerB.ExpectMsg<ComputeShard>().Shard.Id);
        Assert.Equal(workerB.Ref, coordinator.ExpectMsg<ShardDispatched>().Worker);
    }

    [Fact]
    public void Queue_fills_a_feeds_slots_round_robin_and_skips_workers_of_unreachable_nodes()
    {
        var (problem, plan, _) = Computed(15);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-slots");
        var coordinator = CreateTestProbe();
        var feed = CreateTestProbe();
        var single = CreateTestProbe();
        feed.Send(queue, new WorkerReady(3));
        single.Send(queue, new WorkerReady());
        foreach (var shard in plan.Shards.Take(5))
        {
            queue.Tell(Work(problem, shard, 1, feed, coordinator));
        }

        // Four shards fill the four slots, alternating between the two offers; the fifth waits.
        Assert.Equal(3, feed.ReceiveN(3).Count);
        Assert.IsType<ComputeShard>(single.ExpectMsg<ComputeShard>());
        feed.ExpectNoMsg(TimeSpan.FromMilliseconds(100));

        // Its node unreachable, the feed gets nothing however much room it offers, until it is reachable again.
        queue.Tell(new NodeUnreachable(feed.Ref.Path.Address));
        feed.Send(queue, new WorkerReady(2));
        feed.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
        queue.Tell(new NodeReachable(feed.Ref.Path.Address));
        Assert.Equal(plan.Shards[4].Id, feed.ExpectMsg<ComputeShard>().Shard.Id);
    }

    [Fact]
    public void Queue_serves_clients_in_turn_so_a_job_behind_another_clients_many_waits_for_one_shard_of_theirs()
    {
        var (problem, plan, _) = Computed(16);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-fair");
        var coordinator = CreateTestProbe();
        var worker = CreateTestProbe();
        var first = new DataRef("first-client:1", [1]);
        var second = new DataRef("second-client:2", [2]);
        var other = new JobId("other-client-job");
        foreach (var shard in plan.Shards.Take(12))
        {
            queue.Tell(Work(problem, shard, 1, worker, coordinator) with { Store = first });
        }

        foreach (var shard in plan.Shards.Take(3))
        {
            queue.Tell(Work(problem, shard, 1, worker, coordinator) with { Job = other, Store = second });
        }

        // One slot at a time: the second client's three shards go second, fourth and sixth, not after the first client's twelve.
        var order = new List<JobId>();
        for (int i = 0; i < 15; i++)
        {
            worker.Send(queue, new WorkerReady());
            order.Add(worker.ExpectMsg<ComputeShard>().Job);
        }

        Assert.Equal([1, 3, 5], order.Select((job, i) => (job, i)).Where(x => x.job == other).Select(x => x.i));
        Assert.Equal(12, order.Count(job => job == Job));
    }

    [Fact]
    public void Queue_drops_an_ended_jobs_shards_and_tells_busy_workers()
    {
        var (problem, plan, _) = Computed(14);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-ended");
        var busy = CreateTestProbe();
        var idle = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var s = plan.Shards;
        busy.Send(queue, new WorkerReady());
        queue.Tell(Work(problem, s[0], 1, busy, coordinator));
        busy.ExpectMsg<ComputeShard>();
        queue.Tell(Work(problem, s[1], 1, busy, coordinator));
        queue.Tell(Work(problem, s[0], 2, busy, coordinator));

        queue.Tell(new JobEnded(Job, "completed"));
        Assert.Equal(Job, busy.ExpectMsg<JobEnded>().Job);

        // Neither the queued copies nor a late re-issue reach a worker.
        queue.Tell(Work(problem, s[2], 2, busy, coordinator));
        idle.Send(queue, new WorkerReady());
        idle.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
    }

    [Fact]
    public void Ended_jobs_are_remembered_up_to_a_bound()
    {
        var ended = new EndedJobs(capacity: 3);
        for (int i = 0; i < 10; i++)
        {
            ended.Add(new JobId($"job-{i}"));
        }

        Assert.Equal(3, ended.Count);
        Assert.True(ended.Contains(new JobId("job-9")));
        Assert.False(ended.Contains(new JobId("job-0")));
    }
}
