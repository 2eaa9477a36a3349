using AttentionActors.Cluster.Wire;

namespace AttentionActors.Cluster.Transport;

/// <summary>
/// A message to a node reached no queue: the node's inbox does not exist on the broker, because
/// the node is gone or has not finished reconnecting. Nothing was delivered, so sending again is safe.
/// </summary>
public sealed class UnroutableMessageException(string messageType, ActorAddress target)
    : Exception($"{messageType} to {target} was returned by the broker: node {target.Node} has no inbox there (the node is gone or still reconnecting)")
{
    public ActorAddress Target { get; } = target;
}
