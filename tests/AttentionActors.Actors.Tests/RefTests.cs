using AttentionActors.Actors.TestKit;

namespace AttentionActors.Actors.Tests;

/// <summary>References: equality by path, resolving a path, and death watch that works or refuses loudly.</summary>
public sealed class RefTests : IAsyncLifetime
{
    private readonly ActorSystem system = ActorSystem.Create("ref-tests");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await system.TerminateAsync(TimeSpan.Zero);

    private sealed class Idle : ActorBase
    {
        public Idle() => ReceiveAny(_ => { });
    }

    /// <summary>Watches whatever reference it is sent, and passes each <see cref="Terminated"/> on to a reporter.</summary>
    private sealed class Watcher : ActorBase
    {
        public Watcher(IActorRef report)
        {
            Receive<IActorRef>(Context.Watch);
            Receive<Terminated>(t => report.Tell(t));
        }
    }

    /// <summary>A reference to an actor elsewhere, whose transport offers no death watch.</summary>
    private sealed class RemoteStub : ActorRefBase
    {
        public override ActorPath Path { get; } = new("cluster://node-7", "worker-3");

        public override void Tell(object message, IActorRef? sender = null)
        {
        }
    }

    [Fact]
    public void References_are_equal_by_path_and_resolve_to_the_live_actor()
    {
        var actor = system.ActorOf(Props.Create(() => new Idle()), "resolvable");
        Assert.True(system.TryResolve(new ActorPath("local://ref-tests", "resolvable"), out var resolved));
        Assert.Equal(actor, resolved);
        Assert.Equal(actor.GetHashCode(), resolved.GetHashCode());
        Assert.NotEqual<IActorRef>(actor, new TestProbe(system));
        Assert.False(system.TryResolve(new RemoteStub().Path, out _));

        // A transport's resolver serves remote addresses; two resolutions compare equal.
        system.AddResolver(path => path.Address == "cluster://node-7" ? new RemoteStub() : null);
        Assert.True(system.TryResolve(new ActorPath("cluster://node-7", "worker-3"), out var remote));
        Assert.True(system.TryResolve(new ActorPath("cluster://node-7", "worker-3"), out var again));
        Assert.Equal(remote, again);
        Assert.NotSame(remote, again);
    }

    [Fact]
    public void Watching_a_reference_without_death_watch_is_refused_loudly()
    {
        var probe = new TestProbe(system);
        var error = Assert.Throws<NotSupportedException>(() => probe.Watch(new RemoteStub()));
        Assert.Contains("cluster://node-7/worker-3", error.Message, StringComparison.Ordinal);

        // Inside an actor the refusal is a failure its supervisor sees, not silence.
        var failures = new TestProbe(system, "failures");
        system.EventStream.Subscribe(failures, typeof(ActorFailed));
        var watcher = system.ActorOf(Props.Create(() => new Watcher(probe)), "watcher-remote");
        watcher.Tell(new RemoteStub());
        var failed = failures.ExpectMsg<ActorFailed>();
        Assert.IsType<NotSupportedException>(failed.Cause);
    }

    [Fact]
    public void A_watchable_reference_that_is_not_a_local_actor_delivers_terminated()
    {
        var report = new TestProbe(system, "report");
        var watched = new TestProbe(system, "watched");
        var watcher = system.ActorOf(Props.Create(() => new Watcher(report)), "watcher-probe");
        watcher.Tell(watched);
        report.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        watched.Stop();
        Assert.Equal(watched, report.ExpectMsg<Terminated>().Actor);

        // Watching after the end still delivers, at once.
        var late = system.ActorOf(Props.Create(() => new Watcher(report)), "watcher-late");
        late.Tell(watched);
        Assert.Equal(watched, report.ExpectMsg<Terminated>().Actor);
    }

    [Fact]
    public async Task The_scheduler_runs_on_the_systems_clock()
    {
        var clock = new ManualTimeProvider();
        var timed = ActorSystem.Create("timed", null, clock);
        try
        {
            var probe = new TestProbe(timed);
            timed.Scheduler.ScheduleTellOnce(TimeSpan.FromHours(1), probe, "late");
            probe.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
            clock.Advance(TimeSpan.FromMinutes(59));
            probe.ExpectNoMsg(TimeSpan.FromMilliseconds(50));
            clock.Advance(TimeSpan.FromMinutes(1));
            Assert.Equal("late", probe.ExpectMsg<string>());
            Assert.Equal(TimeSpan.FromHours(1), timed.Time.GetUtcNow() - new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        }
        finally
        {
            await timed.TerminateAsync(TimeSpan.Zero);
        }
    }
}
