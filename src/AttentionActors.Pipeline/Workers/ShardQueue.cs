using Akka.Actor;

namespace AttentionActors.Pipeline.Workers;

/// <summary>Notice from a worker to its queue, always in the same process (in cluster mode, the node's work feed): it is idle and takes the next shard.</summary>
public sealed record WorkerReady : INoSerializationVerificationNeeded;

/// <summary>
/// Notice that a job is over (<paramref name="Why"/>: completed, failed or cancelled): its queued
/// shards are dropped and workers abandon its running ones. Cancellation travels as this message,
/// so the same rule works when the workers live in other processes.
/// </summary>
public sealed record JobEnded(JobId Job, string Why) : IWireMessage;

/// <summary>
/// The in-memory work queue: shards wait in arrival order (re-issued ones jump the line) and go
/// to whichever worker is idle, so the busiest worker is never handed a second shard while another
/// waits. It knows every worker that ever asked for work, so <see cref="JobEnded"/> reaches the busy
/// ones too. In cluster mode a RabbitMQ quorum queue with prefetch 1 plays this part.
/// </summary>
internal sealed class ShardQueue : ReceiveActor
{
    private readonly LinkedList<ComputeShard> pending = new();
    private readonly LinkedList<IActorRef> idle = new();
    private readonly HashSet<IActorRef> workers = [];
    private readonly EndedJobs ended = new();

    public ShardQueue()
    {
        Receive<WorkerReady>(_ =>
        {
            if (workers.Add(Sender))
            {
                Context.Watch(Sender);
            }

            if (!idle.Contains(Sender))
            {
                idle.AddLast(Sender);
            }

            Dispatch();
        });
        Receive<ComputeShard>(work =>
        {
            if (ended.Contains(work.Job))
            {
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
        Receive<Terminated>(t =>
        {
            idle.Remove(t.ActorRef);
            workers.Remove(t.ActorRef);
        });
    }

    private void Dispatch()
    {
        while (pending.First is { } work && idle.First is { } worker)
        {
            pending.RemoveFirst();
            idle.RemoveFirst();
            worker.Value.Tell(work.Value, Self);
        }
    }
}
