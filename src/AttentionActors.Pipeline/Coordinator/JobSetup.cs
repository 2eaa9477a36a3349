using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Coordinator;

/// <summary>Where a worker's data for a shard comes from: views of the job's tensors in one process.</summary>
public delegate ShardInput ShardInputSource(Shard shard);

/// <summary>
/// Everything a <see cref="JobCoordinator"/> runs a job with: the plan, the roles it talks to, and
/// how shard data and results travel — in one process (<see cref="Inputs"/>), or in a cluster
/// (<see cref="Store"/>, <see cref="ResultsTo"/> and <see cref="ClientInbox"/> on the data plane).
/// </summary>
public sealed record JobSetup(JobId Job, AttentionGeometry Geometry, ShardPlan Plan, IActorRef Queue, IActorRef Reducer, IActorRef Client, JobOptions Options)
{
    /// <summary>Views of the job's tensors per shard, in one process [none].</summary>
    public ShardInputSource? Inputs { get; init; }

    /// <summary>The tensor store workers fetch shard data from, in a cluster [none].</summary>
    public DataRef? Store { get; init; }

    /// <summary>The reducer node's data endpoint, where workers send results in a cluster [empty: tell the reducer].</summary>
    public string ResultsTo { get; init; } = "";

    /// <summary>The client's inbox, where the reducer sends rows, progress and completion in a cluster [none: tell <see cref="Client"/>].</summary>
    public DataRef? ClientInbox { get; init; }

    /// <summary>With an explicit mask: which blocks each row may attend, for the reducer's checks [none].</summary>
    public MaskBlocks? MaskBlocks { get; init; }

    /// <summary>The worker node each shard is dealt to, by shard id (<see cref="Locality"/>); a re-issued attempt goes to any [none].</summary>
    public IReadOnlyList<string>? Homes { get; init; }

    /// <summary>The fraction of shards (0 to 1) computed a second time on another node, whose bits must match [0].</summary>
    public double Audit { get; init; }
}
