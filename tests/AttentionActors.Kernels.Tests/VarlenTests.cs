using AttentionActors.Kernels.Reference;

namespace AttentionActors.Kernels.Tests;

/// <summary>
/// Variable-length batches as FlashAttention's <c>flash_attn_varlen_func</c> poses them, padded to
/// [B, H, N, D]: each batch entry is its own sequence with its own diagonal, and padding rows are never computed.
/// </summary>
public class VarlenTests
{
    private static readonly SequenceLength[] Sequences = [new(70, 130), new(1, 40), new(0, 90), new(120, 120), new(45, 0)];

    public static TheoryData<string> Cases => ["causal bottom-right", "causal top-left", "window, no causal", "alibi and window", "dense"];

    private static AttentionOptions Options(string name) => name switch
    {
        "causal bottom-right" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 },
        "causal top-left" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.TopLeft, BlockSize = 16 },
        "window, no causal" => new AttentionOptions { Window = (20, 7), Alignment = DiagonalAlignment.BottomRight, BlockSize = 16 },
        "alibi and window" => new AttentionOptions { AlibiSlopes = [.. Enumerable.Range(0, 20).Select(i => 0.01f * (i + 1))], Window = (50, 50), Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 },
        _ => new AttentionOptions { BlockSize = 48 },
    };

    /// <summary>
    /// Each sequence computed alone, as its own problem of its own lengths (Nq = q_b, Nk = k_b), is
    /// what the padded batch must give, bit for bit: rows past q_b get output 0 and lse −∞.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void A_padded_varlen_batch_gives_each_sequence_the_bits_of_computing_it_alone(string name)
    {
        const int b = 5, h = 4, hk = 2, nq = 120, nk = 130, d = 8;
        var (q, k, v) = TestData.Qkv(name.Length + 50, b, h, hk, nq, nk, d, d);
        var options = Options(name) with { SequenceLengths = Sequences };
        var batch = Attention.Compute(q, k, v, options);
        TestData.AssertWithinContract(batch, ReferenceAttention.Compute(q, k, v, options), $"{name}: against the reference");
        for (int s = 0; s < b; s++)
        {
            var (sq, sk) = Sequences[s];
            var alone = AttentionTensor.Zeros("Q", 1, h, sq, d);
            var keys = AttentionTensor.Zeros("K", 1, hk, sk, d);
            var values = AttentionTensor.Zeros("V", 1, hk, sk, d);
            for (int head = 0; head < h; head++)
            {
                q.Data.Span.Slice((int)q.RowOffset(s, head, 0), sq * d).CopyTo(alone.Data.Span[(head * sq * d)..]);
            }

            for (int head = 0; head < hk; head++)
            {
                k.Data.Span.Slice((int)k.RowOffset(s, head, 0), sk * d).CopyTo(keys.Data.Span[(head * sk * d)..]);
                v.Data.Span.Slice((int)v.RowOffset(s, head, 0), sk * d).CopyTo(values.Data.Span[(head * sk * d)..]);
            }

            var own = Options(name) with { AlibiSlopes = Options(name).AlibiSlopes?[(s * h)..((s + 1) * h)] };
            var expected = Attention.Compute(alone, keys, values, own);
            for (int head = 0; head < h; head++)
            {
                var rows = batch.Output.Data.Span.Slice((int)batch.Output.RowOffset(s, head, 0), nq * d);
                TestData.AssertBitwise(expected.Output.Data.Span.Slice(head * sq * d, sq * d), rows[..(sq * d)], $"{name}: sequence {s}, head {head}, output");
                TestData.AssertBitwise(expected.Lse.AsSpan(head * sq, sq), batch.Lse.AsSpan(((s * h) + head) * nq, sq), $"{name}: sequence {s}, head {head}, lse");
                Assert.True(rows[(sq * d)..].IndexOfAnyExcept(0f) < 0, $"{name}: sequence {s}, head {head}: a padding row has a non-zero output");
                Assert.All(batch.Lse.AsSpan((((s * h) + head) * nq) + sq, nq - sq).ToArray(), x => Assert.Equal(float.NegativeInfinity, x));
            }
        }
    }

    [Fact]
    public void The_packed_and_padded_forms_of_a_batch_give_identical_bits()
    {
        // FlashAttention's packed layout: tokens of every sequence one after another, [total, H, D].
        int[] cuQ = [0, 70, 71, 71, 191, 236], cuK = [0, 130, 170, 260, 380, 380];
        const int h = 4, hk = 2, d = 8;
        var rng = new Random(9);
        float[] Packed(int tokens, int heads) => [.. Enumerable.Range(0, tokens * heads * d).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        float[] q = Packed(cuQ[^1], h), k = Packed(cuK[^1], hk), v = Packed(cuK[^1], hk);
        var options = new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32, SequenceLengths = VarlenBatch.Sequences(cuQ, cuQ[^1], cuK, cuK[^1]) };
        Assert.Equal(Sequences, options.SequenceLengths);
        var result = Attention.Compute(VarlenBatch.Pad("Q", q, h, d, cuQ), VarlenBatch.Pad("K", k, hk, d, cuK), VarlenBatch.Pad("V", v, hk, d, cuK), options);
        var packedOut = VarlenBatch.Unpad(result.Output, cuQ);
        Assert.Equal(cuQ[^1] * h * d, packedOut.Length);

        // The same batch built padded by hand, token by token, and computed: the same bits.
        var (pq, pk, pv) = (AttentionTensor.Zeros("Q", 5, h, 120, d), AttentionTensor.Zeros("K", 5, hk, 130, d), AttentionTensor.Zeros("V", 5, hk, 130, d));
        for (int b = 0; b < 5; b++)
        {
            for (int t = cuQ[b]; t < cuQ[b + 1]; t++)
            {
                for (int head = 0; head < h; head++)
                {
                    q.AsSpan(((t * h) + head) * d, d).CopyTo(pq.Data.Span[(int)pq.RowOffset(b, head, t - cuQ[b])..]);
                }
            }

            for (int t = cuK[b]; t < cuK[b + 1]; t++)
            {
                for (int head = 0; head < hk; head++)
                {
                    k.AsSpan(((t * hk) + head) * d, d).CopyTo(pk.Data.Span[(int)pk.RowOffset(b, head, t - cuK[b])..]);
                    v.AsSpan(((t * hk) + head) * d, d).CopyTo(pv.Data.Span[(int)pv.RowOffset(b, head, t - cuK[b])..]);
                }
            }
        }

        var padded = Attention.Compute(pq, pk, pv, options);
        TestData.AssertBitwise(padded.Output.Data.Span, result.Output.Data.Span, "padded by hand against padded from the packed form");
        TestData.AssertBitwise(VarlenBatch.Unpad(padded.Output, cuQ), packedOut, "packed output");
    }

    [Fact]
    public void Bad_cumulative_offsets_are_named()
    {
        var q = new float[10 * 2 * 4];
        (int[] Cu, string Expected)[] cases =
        [
            ([1, 10], "cu_seqlens_q[0] is 1; cumulative offsets start at 0"),
            ([0, 6, 5, 10], "cu_seqlens_q[2] = 5 is below cu_seqlens_q[1] = 6"),
            ([0, 4, 9], "cu_seqlens_q ends at 9, but the packed tensor holds 10 tokens"),
            ([0], "holds 1 offsets"),
        ];
        foreach (var (cu, expected) in cases)
        {
            var error = Assert.Throws<AttentionInputException>(() => VarlenBatch.Sequences(cu, 10, [0, 3, 10], 10));
            Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"expected “{expected}” in “{error.Message}”");
        }

        Assert.Contains("counts 1 sequences and cu_seqlens_k 2", Assert.Throws<AttentionInputException>(() => VarlenBatch.Sequences([0, 10], 10, [0, 3, 10], 10)).Message);
        Assert.Contains("not whole tokens", Assert.Throws<AttentionInputException>(() => VarlenBatch.Pad("Q", q.AsSpan(1), 2, 4, [0, 10])).Message);
    }

    [Fact]
    public void Bad_sequence_lengths_are_named()
    {
        var (q, k, v) = TestData.Qkv(3, 2, 2, 2, 30, 40, 4, 4);
        (SequenceLength[] Sequences, int[]? KeyLengths, DiagonalAlignment? Alignment, string Expected)[] cases =
        [
            ([new(30, 40)], null, null, "1 sequence lengths given for a batch of 2"),
            ([new(31, 40), new(1, 1)], null, null, "sequence 0 of 31 queries and 40 keys is outside"),
            ([new(3, 3), new(1, -1)], null, null, "sequence 1 of 1 queries and -1 keys is outside"),
            ([new(3, 4), new(1, 1)], [40, 40], null, "not both"),
            ([new(3, 4), new(1, 1)], null, null, "sequence 0 has 3 queries ≠ 4 keys: its causal mask needs an explicit alignment"),
        ];
        foreach (var (sequences, keyLengths, alignment, expected) in cases)
        {
            var options = new AttentionOptions { SequenceLengths = sequences, KeyLengths = keyLengths, Alignment = alignment, Causal = true };
            var error = Assert.Throws<AttentionInputException>(() => Attention.Compute(q, k, v, options));
            Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"expected “{expected}” in “{error.Message}”");
        }
    }
}
