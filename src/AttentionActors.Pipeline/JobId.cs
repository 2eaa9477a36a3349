namespace AttentionActors.Pipeline;

/// <summary>Identifies one attention job across every actor (and, in cluster mode, every node).</summary>
public readonly record struct JobId(string Value)
{
    public static JobId New() => new(Guid.NewGuid().ToString("N")[..12]);

    public override string ToString() => Value;
}
