using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>
/// A decoding step with grouped key/value heads (GQA, MQA) seen as one query head per K/V head:
/// the G query heads of group k become rows [g·Nq, (g + 1)·Nq) of stacked head k. A group's query
/// heads are adjacent, so Q <c>[B, H, Nq, d]</c> and the output <c>[B, H, Nq, d_v]</c> already
/// have the memory layout of <c>[B, H/G, G·Nq, d]</c>: this changes shapes, not data. A row's result
/// depends only on its query, the keys, the values and the options, never on which rows share its
/// shard or panel, so the bits are the same. What changes is the plan: a shard of the stacked job
/// holds a whole group's rows and reads the group's keys and values once, as the single-node
/// split-KV path does, where shards of one query head read them once per query head.
/// Only where no option depends on a row's position or head: no causal mask (unless it hides no
/// key from any row), window, ALiBi, explicit mask or variable-length sequences (key padding per
/// batch is kept).
/// </summary>
public static class KeyGroupStacking
{
    /// <summary>
    /// The stacked problem and output of a decoding step (at most <see cref="PanelKernelShape.PanelRows"/>
    /// query rows per head, K/V heads shared by several query heads, whole tensors in one buffer
    /// each, options that do not depend on a row's position or head), or null when the problem
    /// is not one.
    /// </summary>
    public static (AttentionProblem Problem, AttentionTensor? Output)? TryStack(AttentionProblem problem, AttentionTensor? output = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        var o = problem.Options;
        var q = problem.Q;

        // A causal mask whose first row's diagonal lies on or past the last key hides nothing: a
        // one-row step aligned bottom-right, as decoding steps are (FlashAttention's convention).
        bool hidesNothing = o.Causal && g.DiagonalOffset >= g.KeySeq - 1;
        if (g.GroupSize < 2 || g.QuerySeq > PanelKernelShape.PanelRows || g.Layer is not null || g.Pass != JobPass.Attention
            || (o.Causal && !hidesNothing) || o.Window is not null || o.AlibiSlopes is not null || o.SequenceLengths is not null || problem.Mask is not null
            || q.IsSegmented || q.IsWindow || output is { IsSegmented: true } or { IsWindow: true })
        {
            return null;
        }

        int kvHeads = g.KvHeads, rows = g.GroupSize * g.QuerySeq;
        var stackedQ = new AttentionTensor(q.Name, q.Data, g.Batch, kvHeads, rows, g.KeyDim);
        var geometry = AttentionGeometry.Create(stackedQ.ShapeInfo, problem.K.ShapeInfo, problem.V.ShapeInfo, hidesNothing ? o with { Causal = false } : o);

        // The same values the problem's own check read: not scanned again.
        var stacked = AttentionProblem.Create(geometry, stackedQ, problem.K, problem.V, null, checkValues: false);
        var stackedOutput = output is null ? null : new AttentionTensor(output.Name, output.Data, g.Batch, kvHeads, rows, g.ValueDim);
        return (stacked, stackedOutput);
    }

    /// <summary>
    /// The result of <paramref name="problem"/> from that of its stacked form: the same values in
    /// the problem's shape (<paramref name="output"/> itself when the caller gave one). The
    /// log-sum-exp and entropy <c>[B, H/G, G·Nq]</c> are already in the order of <c>[B, H, Nq]</c>.
    /// </summary>
    public static AttentionResult Unstack(AttentionProblem problem, AttentionResult stacked, AttentionTensor? output = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(stacked);
        var s = stacked.Output;
        return stacked with { Output = output ?? new AttentionTensor(s.Name, s.Data, problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim) };
    }
}
