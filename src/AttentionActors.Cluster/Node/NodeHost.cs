namespace AttentionActors.Cluster.Node;

/// <summary>The names of the actors every node runs, the same on every node so that any node finds them at an address.</summary>
public static class NodeHost
{
    /// <summary>The node's agent: its card, its job tables, draining, the operator's questions.</summary>
    public const string AgentName = "node";

    /// <summary>A coordinator node's work queue.</summary>
    public const string QueueName = "queue";

    /// <summary>A coordinator node's job host.</summary>
    public const string JobsName = "jobs";

    /// <summary>A reducer node's reducer.</summary>
    public const string ReducerName = "reducer";

    /// <summary>A worker node's feed.</summary>
    public const string FeedName = "feed";
}
