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
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, blocking)), "interrupted");
        queue.ExpectMsg<WorkerReady>();
        var shard = plan.Shards[0];
        worker.Tell(new ComputeShard(Job, shard, 1, InputOf(problem, shard), reducer, coordinator), queue);
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
        worker.Tell(new ComputeShard(Job, plan.Shards[1], 2, InputOf(problem, plan.Shards[1]), reducer, coordinator), queue);
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
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, failing, null, null, null)), "failing");
        queue.ExpectMsg<WorkerReady>();
        worker.Tell(new ComputeShard(Job, plan.Shards[0], 2, InputOf(problem, plan.Shards[0]), CreateTestProbe(), coordinator), queue);
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
        var worker = Sys.ActorOf(Props.Create(() => new Worker(queue, Worker.Kernel(Kernels.Simd.KernelPath.Auto))), "kernel");
        queue.ExpectMsg<WorkerReady>();
        foreach (var shard in plan.Shards)
        {
            // The input is a copy, as it would come over the wire: nothing of the whole tensors is reachable.
            var view = InputOf(problem, shard);
            var copy = view with { Q = view.Q.ToArray(), K = view.K.ToArray(), V = view.V.ToArray() };
            worker.Tell(new ComputeShard(Job, shard, 1, copy, reducer, CreateTestProbe()), queue);
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
    public void Queue_gives_each_idle_worker_one_shard_and_reissues_first()
    {
        var (problem, plan, _) = Computed(6);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-order");
        var workerA = CreateTestProbe();
        var workerB = CreateTestProbe();
        var s = plan.Shards;
        ComputeShard Work(int i, int attempt) => new(Job, s[i], attempt, InputOf(problem, s[i]), workerA, workerA);
        queue.Tell(Work(0, 1));
        queue.Tell(Work(1, 1));
        queue.Tell(Work(2, 2));
        workerA.Send(queue, new WorkerReady());
        Assert.Equal(s[2].Id, workerA.ExpectMsg<ComputeShard>().Shard.Id);
        workerA.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        workerB.Send(queue, new WorkerReady());
        Assert.Equal(s[0].Id, workerB.ExpectMsg<ComputeShard>().Shard.Id);
    }

    [Fact]
    public void Queue_drops_an_ended_jobs_shards_and_tells_busy_workers()
    {
        var (problem, plan, _) = Computed(14);
        var queue = Sys.ActorOf(Props.Create(() => new ShardQueue()), "queue-ended");
        var busy = CreateTestProbe();
        var idle = CreateTestProbe();
        var s = plan.Shards;
        busy.Send(queue, new WorkerReady());
        queue.Tell(new ComputeShard(Job, s[0], 1, InputOf(problem, s[0]), busy, busy));
        busy.ExpectMsg<ComputeShard>();
        queue.Tell(new ComputeShard(Job, s[1], 1, InputOf(problem, s[1]), busy, busy));
        queue.Tell(new ComputeShard(Job, s[0], 2, InputOf(problem, s[0]), busy, busy));

        queue.Tell(new JobEnded(Job, "completed"));
        Assert.Equal(Job, busy.ExpectMsg<JobEnded>().Job);

        // Neither the queued copies nor a late re-issue reach a worker.
        queue.Tell(new ComputeShard(Job, s[2], 2, InputOf(problem, s[2]), busy, busy));
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
