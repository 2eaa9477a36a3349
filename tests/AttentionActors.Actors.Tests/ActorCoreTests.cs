using AttentionActors.Actors.TestKit;

namespace AttentionActors.Actors.Tests;

public sealed class ActorCoreTests : IAsyncLifetime
{
    private readonly ActorSystem system = ActorSystem.Create("core-tests");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await system.TerminateAsync(TimeSpan.Zero);

    private sealed record Add(int Value);

    private sealed record Get;

    private sealed record Boom(string Why);

    private sealed record Block(ManualResetEventSlim Gate);

    /// <summary>Keeps a running list; throws on <see cref="Boom"/>; blocks on <see cref="Block"/>.</summary>
    private sealed class Recorder : ActorBase
    {
        private readonly List<int> seen = [];

        public Recorder(IActorRef? started = null)
        {
            started?.Tell("started");
            Receive<Add>(a => seen.Add(a.Value));
            Receive<Get>(_ => Sender.Tell(seen.ToArray()));
            Receive<Boom>(b => throw new InvalidOperationException(b.Why));
            Receive<Block>(b => b.Gate.Wait());
        }
    }

    [Fact]
    public async Task Messages_from_one_sender_arrive_in_order()
    {
        var probe = new TestProbe(system);
        var actor = system.ActorOf(Props.Create(() => new Recorder()), "ordering");
        var senders = Enumerable.Range(0, 4).Select(s => Task.Run(() =>
        {
            var me = new TestProbe(system, $"sender{s}");
            for (int i = 0; i < 500; i++)
            {
                actor.Tell(new Add((s * 1000) + i), me);
            }
        })).ToArray();
        await Task.WhenAll(senders);
        probe.Send(actor, new Get());
        var seen = probe.ExpectMsg<int[]>();
        Assert.Equal(2000, seen.Length);
        for (int s = 0; s < 4; s++)
        {
            var mine = seen.Where(v => v / 1000 == s).ToArray();
            Assert.Equal(Enumerable.Range(s * 1000, 500), mine);
        }
    }

    [Fact]
    public void A_failing_actor_is_restarted_with_fresh_state_and_the_failure_is_reported()
    {
        var probe = new TestProbe(system);
        var failures = new TestProbe(system, "failures");
        system.EventStream.Subscribe(failures, typeof(ActorFailed));
        var actor = system.ActorOf(Props.Create(() => new Recorder(probe)), "restarting");
        probe.ExpectMsg<string>(predicate: s => s == "started");
        actor.Tell(new Add(1));
        actor.Tell(new Boom("first"));
        var failed = failures.ExpectMsg<ActorFailed>();
        Assert.Equal(Directive.Restart, failed.Decision);
        Assert.Equal(new Boom("first"), failed.Message);
        Assert.Equal("first", failed.Cause.Message);
        probe.ExpectMsg<string>(predicate: s => s == "started");
        probe.Send(actor, new Get());
        Assert.Empty(probe.ExpectMsg<int[]>());
    }

    [Fact]
    public void Restarts_beyond_the_limit_stop_the_actor()
    {
        var parentProbe = new TestProbe(system);
        var supervisor = system.ActorOf(Props.Create(() => new Parent(parentProbe)) with
        {
            SupervisorStrategy = new SupervisorStrategy(_ => Directive.Restart, MaxRestarts: 2),
        }, "limited");
        var child = parentProbe.ExpectMsg<IActorRef>();
        var watcher = new TestProbe(system);
        watcher.Watch(child);
        for (int i = 0; i < 3; i++)
        {
            child.Tell(new Boom($"#{i}"));
        }

        Assert.Same(child, watcher.ExpectMsg<Terminated>().Actor);
        _ = supervisor;
    }

    [Fact]
    public void Escalation_fails_the_supervisor_and_stop_directive_stops_the_child()
    {
        var parentProbe = new TestProbe(system);
        var supervisor = system.ActorOf(Props.Create(() => new Parent(parentProbe)) with
        {
            SupervisorStrategy = new SupervisorStrategy(ex => ex.Message == "escalate" ? Directive.Escalate : Directive.Stop),
        }, "escalating");
        var child = parentProbe.ExpectMsg<IActorRef>();
        var watcher = new TestProbe(system);
        watcher.Watch(child);
        var failures = new TestProbe(system, "failures");
        system.EventStream.Subscribe(failures, typeof(ActorFailed));
        child.Tell(new Boom("escalate"));
        Assert.Same(child, watcher.ExpectMsg<Terminated>().Actor);
        var supervisorFailure = failures.FishForMessage<ActorFailed>(f => ReferenceEquals(f.Actor, supervisor));
        Assert.Equal("escalate", supervisorFailure.Cause.Message);

        // The guardian restarts the supervisor, which creates a fresh child; Stop ends that one for good.
        var second = parentProbe.ExpectMsg<IActorRef>();
        watcher.Watch(second);
        second.Tell(new Boom("stop"));
        Assert.Same(second, watcher.ExpectMsg<Terminated>().Actor);
    }

    private sealed class Parent : ActorBase
    {
        public Parent(IActorRef report)
        {
            var child = Context.ActorOf(Props.Create(() => new Recorder()), "child");
            report.Tell(child);
        }
    }

    [Fact]
    public async Task Ask_returns_the_reply_and_times_out_with_the_target_named()
    {
        var actor = system.ActorOf(Props.Create(() => new Recorder()), "asked");
        actor.Tell(new Add(7));
        int[] reply = await actor.Ask<int[]>(new Get(), TimeSpan.FromSeconds(5));
        Assert.Equal(new[] { 7 }, reply);
        var ex = await Assert.ThrowsAsync<AskTimeoutException>(() => actor.Ask<int[]>(new Add(1), TimeSpan.FromMilliseconds(100)));
        Assert.Contains("asked", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Watching_delivers_terminated_even_after_the_fact()
    {
        var actor = system.ActorOf(Props.Create(() => new Recorder()), "watched");
        var early = new TestProbe(system);
        early.Watch(actor);
        actor.Tell(PoisonPill.Instance);
        Assert.Same(actor, early.ExpectMsg<Terminated>().Actor);
        var late = new TestProbe(system);
        late.Watch(actor);
        Assert.Same(actor, late.ExpectMsg<Terminated>().Actor);
    }

    [Fact]
    public void A_full_mailbox_blocks_the_sender_then_rejects_to_dead_letters()
    {
        var letters = new TestProbe(system, "letters");
        system.EventStream.Subscribe(letters, typeof(DeadLetter));
        using var gate = new ManualResetEventSlim();
        var actor = system.ActorOf(Props.Create(() => new Recorder()) with { MailboxCapacity = 2, PushTimeout = TimeSpan.FromMilliseconds(300) }, "bounded");
        actor.Tell(new Block(gate));
        letters.ExpectNoMsg(TimeSpan.FromMilliseconds(50));
        actor.Tell(new Add(1));
        actor.Tell(new Add(2));

        // Back-pressure: this Tell waits for room; the gate opens while it waits, so it gets in.
        var sw = System.Diagnostics.Stopwatch.StartNew();
        _ = Task.Delay(150).ContinueWith(_ => gate.Set(), TaskScheduler.Default);
        actor.Tell(new Add(3));
        Assert.InRange(sw.ElapsedMilliseconds, 100, 5000);
        letters.ExpectNoMsg(TimeSpan.FromMilliseconds(50));

        // Nobody drains now: the push timeout expires and the message is rejected explicitly.
        gate.Reset();
        actor.Tell(new Block(gate));
        actor.Tell(new Add(4));
        actor.Tell(new Add(5));
        actor.Tell(new Add(6));
        var letter = letters.ExpectMsg<DeadLetter>();
        Assert.Equal(new Add(6), letter.Message);
        Assert.Contains("mailbox full", letter.Reason, StringComparison.Ordinal);
        gate.Set();
    }

    [Fact]
    public async Task Shutdown_drains_mailboxes_then_rejects_later_messages()
    {
        var local = ActorSystem.Create("shutdown");
        var probe = new TestProbe(local);
        var actor = local.ActorOf(Props.Create(() => new Slow(probe)), "slow");
        for (int i = 0; i < 5; i++)
        {
            actor.Tell(i);
        }

        var report = await local.TerminateAsync(TimeSpan.FromSeconds(10));
        Assert.True(report.Drained);
        Assert.Equal(0, report.Rejected);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(i, probe.ExpectMsg<int>());
        }

        int before = local.DeadLetterCount;
        actor.Tell(99);
        Assert.Equal(before + 1, local.DeadLetterCount);
    }

    [Fact]
    public async Task Shutdown_past_its_drain_time_rejects_queued_work_and_counts_it()
    {
        var local = ActorSystem.Create("impatient");
        var probe = new TestProbe(local);
        var actor = local.ActorOf(Props.Create(() => new Slow(probe)), "slow");
        for (int i = 0; i < 20; i++)
        {
            actor.Tell(i);
        }

        var report = await local.TerminateAsync(TimeSpan.FromMilliseconds(60));
        Assert.False(report.Drained);
        Assert.True(report.Rejected > 0, "queued messages must be rejected, not lost");
    }

    private sealed class Slow : ActorBase
    {
        public Slow(IActorRef report) => Receive<int>(i =>
        {
            Thread.Sleep(30);
            report.Tell(i);
        });
    }

    [Fact]
    public void Scheduled_messages_arrive_after_their_delay_and_can_be_cancelled()
    {
        var probe = new TestProbe(system);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        system.Scheduler.ScheduleTellOnce(TimeSpan.FromMilliseconds(100), probe, "late");
        var cancelled = system.Scheduler.ScheduleTellOnce(TimeSpan.FromMilliseconds(50), probe, "never");
        cancelled.Cancel();
        probe.Within(TimeSpan.FromSeconds(3), () => Assert.Equal("late", probe.ExpectMsg<string>()));
        Assert.True(sw.ElapsedMilliseconds >= 95, $"arrived after {sw.ElapsedMilliseconds} ms");
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Become_switches_handlers()
    {
        var probe = new TestProbe(system);
        var actor = system.ActorOf(Props.Create(() => new Toggle()), "toggle");
        probe.Send(actor, "ping");
        Assert.Equal("off", probe.ExpectMsg<string>());
        probe.Send(actor, true);
        probe.Send(actor, "ping");
        Assert.Equal("on", probe.ExpectMsg<string>());
    }

    private sealed class Toggle : ActorBase
    {
        public Toggle() => Off();

        private void Off() => Become(() =>
        {
            Receive<string>(_ => Sender.Tell("off"));
            Receive<bool>(_ => On());
        });

        private void On() => Become(() => Receive<string>(_ => Sender.Tell("on")));
    }
}
