using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Client;

/// <summary>The buffers a job writes into, checked against its geometry before anything runs.</summary>
public static class JobOutputs
{
    /// <summary>
    /// <paramref name="output"/>, or a new array, for the attention output <c>[B, H, Nq, Dv]</c>;
    /// throws naming the shapes when it does not fit. An output of more values than one array holds
    /// must be given (a memory-mapped file in segments).
    /// </summary>
    public static AttentionTensor Attention(AttentionGeometry g, AttentionTensor? output)
    {
        ArgumentNullException.ThrowIfNull(g);
        long length = (long)g.Batch * g.Heads * g.QuerySeq * g.ValueDim;
        if (output is { } given)
        {
            return !given.IsWindow && given.Batch == g.Batch && given.Heads == g.Heads && given.Seq == g.QuerySeq && given.Dim == g.ValueDim
                ? given
                : throw new ArgumentException($"the output {given} does not have the job's shape [{g.Batch}, {g.Heads}, {g.QuerySeq}, {g.ValueDim}]", nameof(output));
        }

        return length <= Array.MaxLength
            ? AttentionTensor.Zeros("out", g.Batch, g.Heads, g.QuerySeq, g.ValueDim)
            : throw new ArgumentException($"the output [{g.Batch}, {g.Heads}, {g.QuerySeq}, {g.ValueDim}] holds {length:N0} values, more than one array may; pass an output tensor (a memory-mapped file in segments)", nameof(output));
    }

    /// <summary>Throws unless <paramref name="lse"/> holds the log-sum-exp <c>[B, H, Nq]</c> of <paramref name="g"/>.</summary>
    public static void CheckLse(AttentionGeometry g, ReadOnlyMemory<float> lse)
    {
        ArgumentNullException.ThrowIfNull(g);
        if (lse.Length != (long)g.Batch * g.Heads * g.QuerySeq)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}] needs {(long)g.Batch * g.Heads * g.QuerySeq}", nameof(lse));
        }
    }

    /// <summary>Throws unless <paramref name="coverage"/> holds <c>[B, Hkv, Nk]</c> values.</summary>
    public static void CheckCoverage(AttentionGeometry g, Memory<float> coverage)
    {
        ArgumentNullException.ThrowIfNull(g);
        if (coverage.Length != (long)g.Batch * g.KvHeads * g.KeySeq)
        {
            throw new ArgumentException($"the coverage buffer holds {coverage.Length} values; [{g.Batch}, {g.KvHeads}, {g.KeySeq}] needs {(long)g.Batch * g.KvHeads * g.KeySeq}", nameof(coverage));
        }
    }
}
