namespace AttentionActors.Kernels;

/// <summary>
/// Bad input to an attention computation: a shape, a parameter or a value. The message names
/// the tensor or option, the index and the value, so it can be shown to a user as it is.
/// </summary>
public sealed class AttentionInputException : ArgumentException
{
    public AttentionInputException()
    {
    }

    public AttentionInputException(string message)
        : base(message)
    {
    }

    public AttentionInputException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
