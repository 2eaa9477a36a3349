namespace AttentionActors.Pipeline;

/// <summary>Thrown when a job fails; the message names the shard or cause.</summary>
public sealed class AttentionJobException : Exception
{
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
