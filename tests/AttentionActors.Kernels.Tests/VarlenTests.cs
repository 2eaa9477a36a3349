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
