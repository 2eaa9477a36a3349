namespace AttentionActors.Pipeline;

/// <summary>Thrown when a job fails; the message names the shard or cause.</summary>
public sealed class AttentionJobException : Exception
{
    /// <summary>The job failed because a node it ran on was lost: the same job submitted again can succeed.</summary>
    public bool NodeLost { get; init; }

    public AttentionJobException()
    {
    }

    public AttentionJobException(string message)
        : base(message)
    {
    }

    public AttentionJobException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
