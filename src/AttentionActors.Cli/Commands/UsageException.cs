namespace AttentionActors.Cli.Commands;

/// <summary>A bad argument; exit code 2 with the message on one line.</summary>
internal sealed class UsageException(string message) : Exception(message);
