using AttentionActors.Actors;

namespace AttentionActors.Pipeline.Workers;

/// <summary>Notice from a worker: it is idle and takes the next shard.</summary>
public sealed record WorkerReady;

/// <summary>Command: drop the job's shards that no worker has taken yet.</summary>
public sealed record CancelShards(JobId Job);

/// <summary>
/// The in-memory work queue: shards wait in arrival order (re-issued ones jump the line) and go
/// to whichever worker is idle, so the busiest worker is never handed a second shard while another
/// waits. In cluster mode a RabbitMQ quorum queue with prefetch 1 plays this part.
/// </summary>
internal sealed class ShardQueue : ActorBase
{
    private readonly LinkedList<ComputeShard> pending = new();
    private readonly LinkedList<IActorRef> idle = new();

    public ShardQueue()
    {
        Receive<WorkerReady>(_ =>
        {
            if (!idle.Contains(Sender))
            {
                Context.Watch(Sender);
                idle.AddLast(Sender);
            }

            Dispatch();
        });
        Receive<ComputeShard>(work =>
        {
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
        Receive<CancelShards>(cancel =>
        {
            for (var node = pending.First; node is not null;)
            {
                var next = node.Next;
                if (node.Value.Job == cancel.Job)
                {
                    pending.Remove(node);
                }

                node = next;
            }
        });
        Receive<Terminated>(t => idle.Remove(t.Actor));
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
