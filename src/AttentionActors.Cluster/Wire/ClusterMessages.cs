using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;

namespace AttentionActors.Cluster.Wire;

/// <summary>Which of a job's tensors a <see cref="TensorChunk"/> belongs to.</summary>
public enum TensorRole
{
    Q,
    K,
    V,

    /// <summary>The attention's log-sum-exp <c>[B, H, Nq]</c>, uploaded for a coverage pass instead of V.</summary>
    Lse,

    /// <summary>A layer job's inputs and weights (<see cref="LayerShape"/>), uploaded instead of Q, K and V.</summary>
    X,
    KeyInput,
    ValueInput,
    Wq,
    Bq,
    Wk,
    Bk,
    Wv,
    Bv,

    /// <summary>An explicit mask <c>[mask batch, mask heads, Nq, Nk]</c> (<see cref="AttentionGeometry.Mask"/>), additive float32.</summary>
    Mask,
}

/// <summary>
/// Command from a client to a coordinator node: plan and run a job of this geometry once its
/// tensors have arrived as <see cref="TensorChunk"/>s. <paramref name="MaxShardBytes"/> 0 takes the
/// coordinator's default; <paramref name="Audit"/> is the fraction of shards computed again on a
/// second worker node, whose bits must match.
/// </summary>
public sealed record SubmitAttention(JobId Job, AttentionGeometry Geometry, long MaxShardBytes, double Audit = 0) : IWireMessage;

/// <summary>
/// Part of a submitted job's tensor: <paramref name="Data"/> are its C-order elements from
/// <paramref name="Offset"/>. <paramref name="Last"/> marks the job's final chunk (V's end, or the lse's in a coverage pass).
/// </summary>
public sealed record TensorChunk(JobId Job, TensorRole Tensor, long Offset, ReadOnlyMemory<float> Data, bool Last) : IWireMessage;

/// <summary>
/// What a node says about itself each heartbeat interval (and once with <paramref name="Leaving"/>
/// when it stops). Times are Unix milliseconds.
/// </summary>
public sealed record NodeHeartbeat(
    string Node,
    IReadOnlyList<string> Roles,
    string Host,
    int ProcessId,
    string Simd,
    int Threads,
    long StartedUnixMs,
    long SentUnixMs,
    long ShardsDone,
    int InFlight,
    bool Leaving,
    IReadOnlyList<string>? EndedJobs = null) : IWireMessage;
