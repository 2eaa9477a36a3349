using Akka.Actor;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// Notice to a queue: the sender (a worker, or a worker node's feed) can take <paramref name="Slots"/>
/// more shards. A queue keeps the largest offer it has heard from each sender, less what it has handed it since.
/// </summary>
public sealed record WorkerReady(int Slots = 1) : IWireMessage;

/// <summary>
/// Notice that a job is over (<paramref name="Why"/>: completed, failed or cancelled): its queued
/// shards are dropped and workers abandon its running ones. Cancellation travels as this message,
/// so the same rule works when the workers live in other processes.
/// </summary>
public sealed record JobEnded(JobId Job, string Why) : IWireMessage;

/// <summary>
/// Notice from a job's coordinator to the queue, after the job's first attempts: every shard of the
/// job has arrived, so a node that runs dry may now take shards dealt to another (until then the
/// shards still on their way may be its own).
/// </summary>
public sealed record ShardsSent(JobId Job) : IWireMessage;

/// <summary>Notice from the queue to a job's coordinator: attempt <paramref name="Attempt"/> of a shard went to <paramref name="Worker"/> (its deadline starts now).</summary>
public sealed record ShardDispatched(JobId Job, int ShardId, int Attempt, IActorRef Worker) : IWireMessage;

/// <summary>Notice from the queue to a job's coordinator: no worker it knows may take this attempt (an audit's second computation, with no other node).</summary>
public sealed record ShardUndeliverable(JobId Job, int ShardId, int Attempt, string Reason) : IWireMessage;

/// <summary>
/// Notice from a node's cluster watcher: the node at <paramref name="Address"/> stopped answering
/// heartbeats. The queue stops handing it shards; coordinators re-issue the attempts they gave it.
/// </summary>
public sealed record NodeUnreachable(Address Address) : INoSerializationVerificationNeeded;

/// <summary>Notice from a node's cluster watcher: the node at <paramref name="Address"/> answers again.</summary>
public sealed record NodeReachable(Address Address) : INoSerializationVerificationNeeded;

/// <summary>
/// The work queue: shards go to whichever worker has room, so a busy worker is never handed a shard
/// while another waits. Clients take turns: each hand-over goes to the next client (the process that
/// holds a job's tensors; every job in one process is one client) with a shard waiting, so a job
/// submitted behind another client's fifty waits for one shard of theirs, not all of them. A
/// client's own shards go in arrival order, re-issued ones first. Workers offer room with
/// <see cref="WorkerReady"/>: a worker one slot at a time, a worker node's feed as many as it has
/// idle threads. A shard with a home node (<see cref="ComputeShard.Home"/>) goes to that node; a node
/// with none of its own left takes another node's shard whose K/V blocks its store lacks the fewest of (work stealing, <see cref="WaitingShards"/>). Each hand-over is reported to the shard's coordinator (<see cref="ShardDispatched"/>).
/// The queue knows every worker that ever asked for work, so <see cref="JobEnded"/> reaches the busy
/// ones too; a worker whose node is unreachable gets nothing until it is reachable again.
/// </summary>
internal sealed class ShardQueue : ReceiveActor
{
    private readonly Dictionary<string, WaitingShards> waiting = [];
    private readonly LinkedList<string> turns = new();
    private readonly Dictionary<IActorRef, int> room = [];
    private readonly LinkedList<IActorRef> offering = new();
    private readonly HashSet<IActorRef> workers = [];
    private readonly HashSet<Address> unreachable = [];
    private readonly EndedJobs ended = new();
    private readonly HashSet<JobId> complete = [];

    private readonly string self;

    /// <param name="self">This node's cluster address, which local workers are known by in shards' homes [none: one process].</param>
    public ShardQueue(string self = "")
    {
        this.self = self;
        Receive<WorkerReady>(ready =>
        {
            if (workers.Add(Sender))
            {
                Context.Watch(Sender);
            }

            room[Sender] = Math.Clamp(ready.Slots, 0, 1 << 16);
            if (room[Sender] == 0)
            {
                offering.Remove(Sender);
            }
            else if (!offering.Contains(Sender))
            {
                offering.AddLast(Sender);
            }

            Dispatch();
        });
        Receive<ComputeShard>(work =>
        {
            if (ended.Contains(work.Job))
            {
                return;
            }

            if (work.Avoid.Length > 0 && !workers.Any(w => Eligible(w, work)))
            {
                work.Coordinator.Tell(new ShardUndeliverable(work.Job, work.Shard.Id, work.Attempt, $"no worker on a node other than {work.Avoid} has asked this coordinator for work"), Self);
                return;
            }

            string client = ClientOf(work);
            if (!waiting.TryGetValue(client, out var shards))
            {
                waiting[client] = shards = new WaitingShards();
                turns.AddLast(client);
            }

            shards.Add(work);
            Dispatch();
        });
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            complete.Remove(end.Job);
            foreach (var (client, shards) in waiting.ToList())
            {
                shards.RemoveJob(end.Job);
                if (shards.Count == 0)
                {
                    waiting.Remove(client);
                    turns.Remove(client);
                }
            }

            foreach (var worker in workers)
            {
                worker.Tell(end, Self);
            }
        });
        Receive<ShardsSent>(sent =>
        {
            if (!ended.Contains(sent.Job))
            {
                complete.Add(sent.Job);
                Dispatch();
            }
        });
        Receive<NodeUnreachable>(lost => unreachable.Add(lost.Address));
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("queue", [.. waiting.Values.SelectMany(shards => shards.All).Select(w => w.Job).Distinct()])));
        Receive<NodeReachable>(back =>
        {
            unreachable.Remove(back.Address);
            Dispatch();
        });
        Receive<Terminated>(t =>
        {
            offering.Remove(t.ActorRef);
            room.Remove(t.ActorRef);
            workers.Remove(t.ActorRef);
        });
    }

    /// <summary>Whose turn a shard waits for: the endpoint of the store that holds its tensors, or this process's.</summary>
    private static string ClientOf(ComputeShard work) => work.Store?.Endpoint ?? "";

    private bool Eligible(IActorRef worker, ComputeShard work)
        => !unreachable.Contains(worker.Path.Address) && (work.Avoid.Length == 0 || worker.Path.Address.ToString() != work.Avoid);

    /// <summary>While workers have room: one shard from the client whose turn it is, then the next client's; a client none of whose shards any worker with room may take loses its turn.</summary>
    private void Dispatch()
    {
        int passed = 0;
        while (offering.Count > 0 && turns.First is { } turn && passed < turns.Count)
        {
            string client = turn.Value;
            var shards = waiting[client];
            turns.RemoveFirst();
            if (!HandOverOne(shards))
            {
                turns.AddLast(client);
                passed++;
                continue;
            }

            passed = 0;
            if (shards.Count > 0)
            {
                turns.AddLast(client);
            }
            else
            {
                waiting.Remove(client);
            }
        }
    }

    /// <summary>Whether a worker on <paramref name="node"/> has asked for work and is reachable.</summary>
    private bool Live(string node) => workers.Any(w => NodeOf(w) == node && !unreachable.Contains(w.Path.Address));

    /// <summary>The node a worker runs on, as shards' homes name it.</summary>
    private string NodeOf(IActorRef worker) => worker.Path.Address.HasGlobalScope ? worker.Path.Address.ToString() : self;

    /// <summary>Hands the first worker with room the shard it should take next (<see cref="WaitingShards.Take"/>); false when no worker with room may take any.</summary>
    private bool HandOverOne(WaitingShards shards)
    {
        for (var worker = offering.First; worker is not null; worker = worker.Next)
        {
            if (unreachable.Contains(worker.Value.Path.Address) || shards.Take(NodeOf(worker.Value), work => Eligible(worker.Value, work), complete.Contains, Live) is not { } work)
            {
                continue;
            }

            var to = worker.Value;

            // The coordinator hears first: whatever the worker says about this attempt reaches it after this notice.
            work.Coordinator.Tell(new ShardDispatched(work.Job, work.Shard.Id, work.Attempt, to), Self);
            to.Tell(work, Self);

            // Round robin: a node with many slots does not take every shard before the next one is offered any.
            offering.Remove(worker);
            if (--room[to] > 0)
            {
                offering.AddLast(to);
            }

            return true;
        }

        return false;
    }
}
