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
/// The work queue: shards wait in arrival order (re-issued ones jump the line) and go to whichever
/// worker has room, so a busy worker is never handed a shard while another waits. Workers offer room
/// with <see cref="WorkerReady"/>: a worker one slot at a time, a worker node's feed as many as it has
/// idle threads. Each hand-over is reported to the shard's coordinator (<see cref="ShardDispatched"/>).
/// The queue knows every worker that ever asked for work, so <see cref="JobEnded"/> reaches the busy
/// ones too; a worker whose node is unreachable gets nothing until it is reachable again.
/// </summary>
internal sealed class ShardQueue : ReceiveActor
{
    private readonly LinkedList<ComputeShard> pending = new();
    private readonly Dictionary<IActorRef, int> room = [];
    private readonly LinkedList<IActorRef> offering = new();
    private readonly HashSet<IActorRef> workers = [];
    private readonly HashSet<Address> unreachable = [];
    private readonly EndedJobs ended = new();

    public ShardQueue()
    {
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

            if (work.Attempt > 1)
            {
                pending.AddFirst(work);
            }
            else
            {
                pending.AddLast(work);
            }

            Dispatch();
        });
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            for (var node = pending.First; node is not null;)
            {
                var next = node.Next;
                if (node.Value.Job == end.Job)
                {
                    pending.Remove(node);
                }

                node = next;
            }

            foreach (var worker in workers)
            {
                worker.Tell(end, Self);
            }
        });
        Receive<NodeUnreachable>(lost => unreachable.Add(lost.Address));
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("queue", [.. pending.Select(w => w.Job).Distinct()])));
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

    private bool Eligible(IActorRef worker, ComputeShard work)
        => !unreachable.Contains(worker.Path.Address) && (work.Avoid.Length == 0 || worker.Path.Address.ToString() != work.Avoid);

    /// <summary>Hands each waiting shard, oldest first, to the first worker with room that may take it.</summary>
    private void Dispatch()
    {
        for (var node = pending.First; node is not null && offering.Count > 0;)
        {
            var next = node.Next;
            var work = node.Value;
            var worker = offering.First;
            while (worker is not null && !Eligible(worker.Value, work))
            {
                worker = worker.Next;
            }

            if (worker is not null)
            {
                pending.Remove(node);
                var to = worker.Value;

                // The coordinator hears first: whatever the worker says about this attempt reaches it after this notice.
                work.Coordinator.Tell(new ShardDispatched(work.Job, work.Shard.Id, work.Attempt, to), Self);
                to.Tell(work, Self);
                if (--room[to] == 0)
                {
                    offering.Remove(worker);
                }
                else
                {
                    // Round robin: a node with many slots does not take every shard before the next one is offered any.
                    offering.Remove(worker);
                    offering.AddLast(to);
                }
            }

            node = next;
        }
    }
}
