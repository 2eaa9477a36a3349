namespace AttentionActors.Kernels;

/// <summary>
/// FlashAttention's packed variable-length layout and this library's padded one. Packed (as
/// <c>flash_attn_varlen_func</c> takes it): <c>X [total, H, D]</c>, sequence b in tokens
/// [cu[b], cu[b + 1]) of the cumulative offsets <c>cu [B + 1]</c>. Padded: <c>X [B, H, N, D]</c>
/// with N the longest sequence, rows past a sequence's length zero, and the lengths in
/// <see cref="AttentionOptions.SequenceLengths"/>. Both hold the same values, so a packed batch
/// computed padded gives the bits of the padded batch.
/// </summary>
public static class VarlenBatch
{
    /// <summary>
    /// The sequence lengths of cumulative offsets <paramref name="cu"/> over <paramref name="total"/>
    /// tokens, or throws <see cref="AttentionInputException"/> naming <paramref name="name"/> and the
    /// first offset that does not start at 0, decreases, or does not end at the total.
    /// </summary>
    public static int[] Lengths(string name, ReadOnlySpan<int> cu, long total)
    {
        if (cu.Length < 2)
        {
            throw new AttentionInputException($"{name} holds {cu.Length} offsets; a batch of B sequences needs B + 1 (0 first, the total last)");
        }

        if (cu[0] != 0)
        {
            throw new AttentionInputException($"{name}[0] is {cu[0]}; cumulative offsets start at 0");
        }

        var lengths = new int[cu.Length - 1];
        for (int b = 0; b < lengths.Length; b++)
        {
            if (cu[b + 1] < cu[b])
            {
                throw new AttentionInputException($"{name}[{b + 1}] = {cu[b + 1]} is below {name}[{b}] = {cu[b]}; cumulative offsets never decrease");
            }

            lengths[b] = cu[b + 1] - cu[b];
        }

        if (cu[^1] != total)
        {
            throw new AttentionInputException($"{name} ends at {cu[^1]}, but the packed tensor holds {total} tokens");
        }

        return lengths;
    }

    /// <summary>The sequences of a batch from its query and key offsets, which must count the same sequences.</summary>
    public static SequenceLength[] Sequences(ReadOnlySpan<int> cuQ, long totalQ, ReadOnlySpan<int> cuK, long totalK)
    {
        var q = Lengths("cu_seqlens_q", cuQ, totalQ);
        var k = Lengths("cu_seqlens_k", cuK, totalK);
        if (q.Length != k.Length)
        {
            throw new AttentionInputException($"cu_seqlens_q counts {q.Length} sequences and cu_seqlens_k {k.Length}");
        }

        return [.. q.Zip(k, (nq, nk) => new SequenceLength(nq, nk))];
    }

    /// <summary>Packed <c>[total, heads, dim]</c> with offsets <paramref name="cu"/> → padded <c>[B, heads, N, dim]</c>, N the longest sequence (at least <paramref name="minLength"/>).</summary>
    public static AttentionTensor Pad(string name, ReadOnlySpan<float> packed, int heads, int dim, ReadOnlySpan<int> cu, int minLength = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        if (packed.Length % ((long)heads * dim) != 0)
        {
            throw new AttentionInputException($"{name} holds {packed.Length} values, not whole tokens of {heads} heads × {dim}");
        }

        var lengths = Lengths($"the offsets of {name}", cu, packed.Length / ((long)heads * dim));
        int n = Math.Max(minLength, lengths.Length == 0 ? 0 : lengths.Max());
        var padded = AttentionTensor.Zeros(name, lengths.Length, heads, n, dim);
        var target = padded.Data.Span;
        for (int b = 0; b < lengths.Length; b++)
        {
            for (int t = 0; t < lengths[b]; t++)
            {
                for (int h = 0; h < heads; h++)
                {
                    packed.Slice((int)((((long)cu[b] + t) * heads + h) * dim), dim).CopyTo(target.Slice((int)padded.RowOffset(b, h, t), dim));
                }
            }
        }

        return padded;
    }

    /// <summary>Padded <c>[B, H, N, D]</c> → packed <c>[total, H, D]</c> with offsets <paramref name="cu"/>: the rows of each sequence, padding dropped.</summary>
    public static float[] Unpad(AttentionTensor padded, ReadOnlySpan<int> cu)
    {
        ArgumentNullException.ThrowIfNull(padded);
        if (cu.Length != padded.Batch + 1)
        {
            throw new AttentionInputException($"{cu.Length} offsets for a batch of {padded.Batch}; it needs {padded.Batch + 1}");
        }

        var lengths = Lengths("the offsets", cu, cu[^1]);
        int heads = padded.Heads, dim = padded.Dim;
        var packed = new float[(long)cu[^1] * heads * dim];
        var source = padded.Data.Span;
        for (int b = 0; b < lengths.Length; b++)
        {
            if (lengths[b] > padded.Seq)
            {
                throw new AttentionInputException($"sequence {b} has {lengths[b]} tokens; the padded tensor holds {padded.Seq}");
            }

            for (int t = 0; t < lengths[b]; t++)
            {
                for (int h = 0; h < heads; h++)
                {
                    source.Slice((int)padded.RowOffset(b, h, t), dim).CopyTo(packed.AsSpan((int)((((long)cu[b] + t) * heads + h) * dim), dim));
                }
            }
        }

        return packed;
    }
}
