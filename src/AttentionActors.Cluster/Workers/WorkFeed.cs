using Akka.Actor;
using Akka.Cluster;
using AttentionActors.Cluster.Node;
using AttentionActors.Kernels;
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
/// as it has idle worker threads plus one more per thread (<see cref="WorkerReady"/> with a slot
/// count), takes what they hand it, and hands each shard to an idle local worker. A shard that
/// arrives while none is idle waits here, re-issues first, and its data is fetched meanwhile, so a
/// worker finishing one shard starts the next without waiting for the network; a worker waits for
/// a fetch already under way rather than start its own. It finds the queues from cluster membership and forwards every
/// <see cref="JobEnded"/> to its workers, so a cancelled job's running shard stops at its next panel.
/// Draining, it offers nothing, hands waiting shards back to their queues, and answers once its
/// running shards are done. States: <see cref="Feeding"/> → <see cref="Draining"/>.
/// </summary>
internal sealed class WorkFeed : ReceiveActor
{
    /// <summary>The feed's actor name on every worker node.</summary>
    public const string Name = "feed";

    private readonly WorkerStats stats;
    private readonly ShardFetcher? prefetch;
    private readonly BlockStore? blocks;
    private readonly int depth;
    private readonly LinkedList<Waiting> waiting = new();
    private readonly LinkedList<IActorRef> idle = new();
    private readonly HashSet<IActorRef> workers = [];
    private readonly Dictionary<IActorRef, ComputeShard> running = [];
    private readonly HashSet<IActorRef> queues = [];
    private readonly List<IActorRef> drainWaiters = [];
    private int offered = -1;

    /// <param name="stats">The counters the node's card reports.</param>
    /// <param name="prefetch">Fetches a waiting shard's data ahead of its worker [none: each worker fetches its own].</param>
    /// <param name="depth">Shards that may wait here with their data fetched, beyond one per idle worker (one per worker thread).</param>
    /// <param name="blocks">The node's store of fetched tensors, whose parts of a job go when it ends [none].</param>
    public WorkFeed(WorkerStats stats, ShardFetcher? prefetch = null, int depth = 0, BlockStore? blocks = null)
    {
        this.blocks = blocks;
        this.stats = stats;
        this.prefetch = prefetch;
        this.depth = prefetch is null ? 0 : Math.Max(0, depth);
        Feeding();
    }

    /// <summary>A shard waiting for a worker, and the fetch of its data under way (if any).</summary>
    private sealed class Waiting(ComputeShard work, IActorRef queue)
    {
        public ComputeShard Work { get; set; } = work;

        public IActorRef Queue { get; } = queue;

        public CancellationTokenSource? Fetching { get; set; }
    }

    private sealed record FindQueue(Address Address) : INoSerializationVerificationNeeded;

    private sealed record Prefetched(Waiting Entry, ShardInput? Input) : INoSerializationVerificationNeeded;

    protected override void PreStart()
        => Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberUp));

    protected override void PostStop()
    {
        Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
        foreach (var entry in waiting)
        {
            entry.Fetching?.Cancel();
        }
    }

    /// <summary>Shards a new offer can take: idle workers plus the prefetch depth, less shards already waiting.</summary>
    private int Room => Math.Max(0, idle.Count + depth - waiting.Count);

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
            blocks?.Forget(end.Job);
            for (var node = waiting.First; node is not null;)
            {
                var next = node.Next;
                if (node.Value.Work.Job == end.Job)
                {
                    node.Value.Fetching?.Cancel();
                    waiting.Remove(node);
                }

                node = next;
            }

            foreach (var worker in workers)
            {
                worker.Tell(end, Self);
            }
        });
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("feed", [.. waiting.Select(w => w.Work.Job).Concat(blocks?.Jobs ?? []).Distinct()])));
        Receive<Prefetched>(done =>
        {
            // A shard no longer waiting (its job ended, or handed back) drops what was fetched for it.
            done.Entry.Fetching?.Dispose();
            done.Entry.Fetching = null;
            if (done.Input is not null && waiting.Contains(done.Entry))
            {
                done.Entry.Work = done.Entry.Work with { Input = done.Input };
            }

            Dispatch();
        });
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
            var entry = new Waiting(work, Sender);
            if (work.Attempt > 1)
            {
                waiting.AddFirst(entry);
            }
            else
            {
                waiting.AddLast(entry);
            }

            Dispatch();
        });
        Receive<Drain>(_ =>
        {
            drainWaiters.Add(Sender);
            stats.StartDraining();
            Become(Draining);

            // Shards not yet started go back to the queues they came from (without data fetched here), to be handed to other nodes.
            foreach (var entry in waiting)
            {
                entry.Fetching?.Cancel();
                entry.Queue.Tell(entry.Work with { Input = null }, Self);
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

    /// <summary>Hands waiting shards to idle workers in order (one whose data is being fetched is handed once it is here), then fetches ahead for the shards still waiting.</summary>
    private void Dispatch()
    {
        while (waiting.First is { Value.Fetching: null } next && idle.First is { } worker)
        {
            waiting.RemoveFirst();
            idle.RemoveFirst();
            running[worker.Value] = next.Value.Work;
            stats.Started();
            worker.Value.Tell(next.Value.Work, next.Value.Queue);
        }

        Prefetch();
        Offer();
    }

    /// <summary>Starts fetching the data of the first <c>depth</c> waiting shards that have none yet, off the mailbox.</summary>
    private void Prefetch()
    {
        if (prefetch is null)
        {
            return;
        }

        int ahead = 0;
        for (var node = waiting.First; node is not null && ahead < depth; node = node.Next, ahead++)
        {
            var entry = node.Value;
            // A shard computed chunk by chunk from the block store is not fetched whole ahead.
            if (entry.Fetching is not null || entry.Work.Input is not null || entry.Work.Store is null || (blocks is not null && BlockStore.Chunks(entry.Work)))
            {
                continue;
            }

            var cancel = entry.Fetching = new CancellationTokenSource();
            var work = entry.Work;
            var fetch = prefetch;

            // A failed fetch is not reported here: the worker fetches again and reports what it finds.
            Task.Run(() => new Prefetched(entry, fetch(work, cancel.Token)), cancel.Token)
                .ContinueWith(t => t.IsCompletedSuccessfully ? t.Result : new Prefetched(entry, null), TaskScheduler.Default)
                .PipeTo(Self);
        }
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
