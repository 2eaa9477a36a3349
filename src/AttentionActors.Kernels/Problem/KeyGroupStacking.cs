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
/// Only where no option depends on a row's head, nor on its position but through its diagonal: a
/// causal mask or window keeps each head's diagonals (<see cref="AttentionGeometry.RowPeriod"/>);
/// no ALiBi, explicit mask or variable-length sequences (key padding per batch is kept).
/// </summary>
public static class KeyGroupStacking
{
    /// <summary>
    /// The geometry of <paramref name="g"/>'s stacked form — <c>[B, H/G, G·Nq, d]</c> queries against
    /// the same keys and values — when it is a decoding step with grouped K/V heads (at most
    /// <see cref="PanelKernelShape.PanelRows"/> query rows per head, several query heads per K/V
    /// head) and no option depends on a row's head, nor on its position but through its diagonal; else null.
    /// </summary>
    public static AttentionGeometry? Stack(AttentionGeometry g)
    {
        ArgumentNullException.ThrowIfNull(g);
        var o = g.Options;

        // A causal mask whose first row's diagonal lies on or past the last key hides nothing: a
        // one-row step aligned bottom-right, as decoding steps are (FlashAttention's convention).
        bool hidesNothing = o.Causal && g.DiagonalOffset >= g.KeySeq - 1;
        if (g.GroupSize < 2 || g.QuerySeq > PanelKernelShape.PanelRows || g.Layer is not null || g.Pass != JobPass.Attention || g.Mask is not null
            || g.RowPeriod > 0 || o.AlibiSlopes is not null || o.SequenceLengths is not null)
        {
            return null;
        }

        var q = g.QueryShape;
        var stacked = new TensorShape(q.Name, q.Batch, g.KvHeads, g.GroupSize * g.QuerySeq, q.Dim);
        if (hidesNothing || (!o.Causal && o.Window is null))
        {
            return AttentionGeometry.Create(stacked, g.KeyShape, g.ValueShape, hidesNothing ? o with { Causal = false } : o);
        }

        // A causal mask or window that hides keys (the rows of speculative decoding, say): each head's
        // rows keep their own diagonals as rows in periods of Nq. With Nq = Nk and no alignment
        // given, both alignments put the diagonal at offset 0; the stacked rows (G·Nq ≠ Nk) need one named.
        var aligned = o.Alignment is null ? o with { Alignment = DiagonalAlignment.TopLeft } : o;
        return AttentionGeometry.Create(stacked, g.KeyShape, g.ValueShape, aligned).WithRowPeriod(g.QuerySeq);
    }

    /// <summary>
    /// The stacked problem and output of <paramref name="problem"/> (<see cref="Stack(AttentionGeometry)"/>)
    /// when its Q, and the output if given, are each whole tensors in one buffer; else null. An
    /// output of another shape than the problem's is not stacked, so the job's own check refuses it.
    /// </summary>
    public static (AttentionProblem Problem, AttentionTensor? Output)? TryStack(AttentionProblem problem, AttentionTensor? output = null)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var q = problem.Q;
        var g = problem.Geometry;
        if (q.IsSegmented || q.IsWindow
            || (output is not null && (output.IsSegmented || output.IsWindow || output.Batch != g.Batch || output.Heads != g.Heads || output.Seq != g.QuerySeq || output.Dim != g.ValueDim))
            || Stack(g) is not { } geometry)
        {
            return null;
        }

        var stackedQ = new AttentionTensor(q.Name, q.Data, geometry.Batch, geometry.Heads, geometry.QuerySeq, geometry.KeyDim);

        // The same values the problem's own check read: not scanned again.
        var stacked = AttentionProblem.Create(geometry, stackedQ, problem.K, problem.V, null, checkValues: false).WithCache(problem.Cache);
        var stackedOutput = output is null ? null : new AttentionTensor(output.Name, output.Data, geometry.Batch, geometry.Heads, geometry.QuerySeq, geometry.ValueDim);
        return (stacked, stackedOutput);
    }

    /// <summary>
    /// How the stacked job's heads and rows map to those of <paramref name="g"/>, for messages that
    /// name a stacked shard (a failed job's, say).
    /// </summary>
    public static string Describe(AttentionGeometry g)
    {
        ArgumentNullException.ThrowIfNull(g);
        int n = g.GroupSize, rows = g.QuerySeq;
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"a decoding step run with the {n} query heads of each K/V head stacked: head k of its shards holds query heads {n}k to {n}k + {n - 1}, and its row g·{rows} + i is row i of query head {n}k + g");
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
