using AttentionActors.Actors;
using AttentionActors.Cluster.Wire;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Cluster.Transport;

/// <summary>
/// An actor on a node of the cluster (another process, or this one once the actor is gone): telling
/// it publishes the message to that node's inbox; watching it fires when the node dies or leaves.
/// Only wire messages cross; anything else is refused loudly.
/// </summary>
internal sealed class ClusterRef(NodeTransport transport, ActorAddress address) : ActorRefBase, IWatchable, IRemoteAddressable
{
    public ActorAddress Address { get; } = address;

    public override ActorPath Path { get; } = new($"node://{address.Node}", address.Name);

    public override void Tell(object message, IActorRef? sender = null)
    {
        if (message is not IWireMessage)
        {
            throw new ArgumentException($"{message.GetType().Name} cannot be sent to {Path}: it is not a wire message", nameof(message));
        }

        _ = transport.Send(Address, message, sender);
    }

    public void AddWatcher(IActorRef watcher)
    {
        if (Address.Node == transport.Node)
        {
            // A reference to this node that did not resolve to a live actor: it has already stopped.
            watcher.Tell(new Terminated(this), NoSender.Instance);
            return;
        }

        transport.Membership.Watch(this, Address.Node, watcher);
    }

    public void RemoveWatcher(IActorRef watcher) => transport.Membership.Unwatch(this, Address.Node, watcher);
}

/// <summary>
/// The work queue as the coordinator sees it: shards go onto the durable quorum queue, and a job's
/// end (<see cref="JobEnded"/>) is broadcast to every worker node's feed.
/// </summary>
internal sealed class WorkQueueRef(NodeTransport transport) : ActorRefBase
{
    public override ActorPath Path { get; } = new($"node://{NodeTransport.AnyNode}", WorkFeed.ActorName);

    public override void Tell(object message, IActorRef? sender = null)
    {
        switch (message)
        {
            case ComputeShard work:
                _ = transport.Enqueue(work, sender);
                break;
            case JobEnded ended:
                _ = transport.Broadcast(ended, sender);
                break;
            default:
                throw new ArgumentException($"the work queue takes shards and job ends, not {message.GetType().Name}", nameof(message));
        }
    }
}
