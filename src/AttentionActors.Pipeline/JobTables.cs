namespace AttentionActors.Pipeline;

/// <summary>Query to a role: which jobs it holds state for now (a job that ended in any way must be in no table).</summary>
public sealed record JobTablesQuery : IWireMessage;

/// <summary>A role's answer to <see cref="JobTablesQuery"/>: the jobs of its table.</summary>
public sealed record JobTables(string Role, IReadOnlyList<JobId> Jobs) : IWireMessage;
