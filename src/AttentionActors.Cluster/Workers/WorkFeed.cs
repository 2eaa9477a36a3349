using Akka.Actor;
using Akka.Cluster;
using AttentionActors.Cluster.Node;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Cluster.Workers;

/// <summary>Command to a worker node's feed: take no more shards, and answer <see cref="Drained"/> once every running one is answered.</summary>
public sealed record Drain : INoSerializationVerificationNeeded;

/// <summary>The feed's answer to <see cref="Drain"/>: nothing runs here any more.</summary>
public sealed record Drained : INoSerializationVerificationNeeded;

/// <summary>Counters a worker node reports on its card; updated by its feed, read by its agent.</summary>
public sealed class WorkerStats
{
    private long shardsDone;
    private int inFlight;
    private int draining;

    public long ShardsDone => Interlocked.Read(ref shardsDone);

    public int InFlight => Volatile.Read(ref inFlight);

    public bool Draining => Volatile.Read(ref draining) != 0;

    internal void Started() => Interlocked.Increment(ref inFlight);

    internal void Finished()
    {
        Interlocked.Decrement(ref inFlight);
        Interlocked.Increment(ref shardsDone);
    }

    internal void StartDraining() => Volatile.Write(ref draining, 1);
}

/// <summary>
/// A worker node's door to every coordinator's queue: it offers the queues room for as many shards
/// as it has idle worker threads (<see cref="WorkerReady"/> with a slot count), takes what they hand
/// it, and hands each shard to an idle local worker (a shard that arrives while none is idle waits
/// here, re-issues first). It finds the queues from cluster membership and forwards every
/// <see cref="JobEnded"/> to its workers, so a cancelled job's running shard stops at its next panel.
/// Draining, it offers nothing, hands waiting shards back to their queues, and answers once its
/// running shards are done. States: <see cref="Feeding"/> → <see cref="Draining"/>.
/// </summary>
internal sealed class WorkFeed : ReceiveActor
{
    /// <summary>The feed's actor name on every worker node.</summary>
    public const string Name = "feed";

    private readonly WorkerStats stats;
    private readonly LinkedList<(ComputeShard Work, IActorRef Queue)> waiting = new();
    private readonly LinkedList<IActorRef> idle = new();
    private readonly HashSet<IActorRef> workers = [];
    private readonly Dictionary<IActorRef, ComputeShard> running = [];
    private readonly HashSet<IActorRef> queues = [];
    private readonly List<IActorRef> drainWaiters = [];
    private int offered = -1;

    public WorkFeed(WorkerStats stats)
    {
        this.stats = stats;
        Feeding();
    }

    private sealed record FindQueue(Address Address) : INoSerializationVerificationNeeded;

    protected override void PreStart()
        => Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberUp));

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    /// <summary>Shards a new offer can take: idle workers less shards already waiting for one.</summary>
    private int Room => Math.Max(0, idle.Count - waiting.Count);

    private void Common()
    {
        Receive<ClusterEvent.MemberUp>(up =>
        {
            if (up.Member.HasRole(NodeRoles.Coordinator))
            {
                Self.Tell(new FindQueue(up.Member.Address));
            }
        });
        Receive<FindQueue>(find => Context.ActorSelection(new RootActorPath(find.Address) / "user" / NodeHost.QueueName).Tell(new Identify(find.Address)));
        Receive<ActorIdentity>(identity =>
        {
            if (identity.Subject is { } queue && queues.Add(queue))
            {
                Context.Watch(queue);
                offered = -1;
                Offer();
            }
        });
        Receive<JobEnded>(end =>
        {
            for (var node = waiting.First; node is not null;)
            {
                var next = node.Next;
                if (node.Value.Work.Job == end.Job)
                {
                    waiting.Remove(node);
                }

                node = next;
            }

            foreach (var worker in workers)
            {
                worker.Tell(end, Self);
            }
        });
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("feed", [.. waiting.Select(w => w.Work.Job).Distinct()])));
        Receive<Terminated>(t =>
        {
            queues.Remove(t.ActorRef);
            workers.Remove(t.ActorRef);
            idle.Remove(t.ActorRef);
            if (running.Remove(t.ActorRef))
            {
                stats.Finished();
            }
        });
    }

    private void Feeding()
    {
        Common();
        Receive<WorkerReady>(_ => Ready(Sender));
        Receive<ComputeShard>(work =>
        {
            if (work.Attempt > 1)
            {
                waiting.AddFirst((work, Sender));
            }
            else
            {
                waiting.AddLast((work, Sender));
            }

            Dispatch();
        });
        Receive<Drain>(_ =>
        {
            drainWaiters.Add(Sender);
            stats.StartDraining();
            Become(Draining);

            // Shards not yet started go back to the queues they came from, to be handed to other nodes.
            foreach (var (work, queue) in waiting)
            {
                queue.Tell(work, Self);
            }

            waiting.Clear();
            foreach (var queue in queues)
            {
                queue.Tell(new WorkerReady(0), Self);
            }

            DrainedIfIdle();
        });
    }

    private void Draining()
    {
        Common();
        Receive<WorkerReady>(_ =>
        {
            Ready(Sender);
            DrainedIfIdle();
        });
        Receive<ComputeShard>(work => Sender.Tell(work, Self));
        Receive<Drain>(_ =>
        {
            drainWaiters.Add(Sender);
            DrainedIfIdle();
        });
    }

    /// <summary>A worker is idle: the shard it ran (if any) is done.</summary>
    private void Ready(IActorRef worker)
    {
        if (workers.Add(worker))
        {
            Context.Watch(worker);
        }

        if (running.Remove(worker))
        {
            stats.Finished();
        }

        if (!idle.Contains(worker))
        {
            idle.AddLast(worker);
        }

        Dispatch();
    }

    private void Dispatch()
    {
        while (waiting.First is { } next && idle.First is { } worker)
        {
            waiting.RemoveFirst();
            idle.RemoveFirst();
            running[worker.Value] = next.Value.Work;
            stats.Started();
            worker.Value.Tell(next.Value.Work, next.Value.Queue);
        }

        Offer();
    }

    /// <summary>Tells every queue the room there is now, when it changed.</summary>
    private void Offer()
    {
        if (stats.Draining || Room == offered)
        {
            return;
        }

        offered = Room;
        foreach (var queue in queues)
        {
            queue.Tell(new WorkerReady(offered), Self);
        }
    }

    private void DrainedIfIdle()
    {
        if (running.Count > 0)
        {
            return;
        }

        foreach (var waiter in drainWaiters)
        {
            waiter.Tell(new Drained());
        }

        drainWaiters.Clear();
    }
}
