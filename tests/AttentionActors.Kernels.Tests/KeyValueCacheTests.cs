using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tests;

/// <summary>
/// A step against a <see cref="KeyValueCache"/> must give the bits of the same step against K and V
/// tensors holding the keys appended so far, after every append, at every width and thread count.
/// </summary>
public class KeyValueCacheTests
{
    public static TheoryData<string> Cases => ["one row, GQA 4, d 128", "16 rows, causal + ALiBi + soft-cap", "gaussian + entropy + padding, d_v 80", "odd widths, MHA", "sliding window, sequences of different lengths", "one feature, MQA 5, blocks of 16"];

    private sealed record Case(int Batch, int Heads, int KvHeads, int Nq, int KeyDim, int ValueDim, int[] Appends, AttentionOptions Options);

    private static Case Make(string name) => name switch
    {
        "one row, GQA 4, d 128" => new(2, 8, 2, 1, 128, 128, [700, 1, 63, 64, 509], new AttentionOptions()),
        "16 rows, causal + ALiBi + soft-cap" => new(1, 8, 2, 16, 40, 24, [300, 17, 83], new AttentionOptions { BlockSize = 64, SoftCap = 5f, AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(8), Causal = true, Alignment = DiagonalAlignment.BottomRight }),
        "gaussian + entropy + padding, d_v 80" => new(2, 4, 4, 3, 16, 80, [150, 250], new AttentionOptions { BlockSize = 32, Score = ScoreFunction.Gaussian, Sigma = 3f, Entropy = true, KeyLengths = [400, 333] }),
        "odd widths, MHA" => new(1, 3, 3, 5, 20, 72, [1, 99, 130], new AttentionOptions { BlockSize = 48 }),
        "one feature, MQA 5, blocks of 16" => new(3, 5, 1, 2, 1, 1, [15, 1, 16, 33], new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.BottomRight }),
        "sliding window, sequences of different lengths" => new(2, 4, 2, 4, 32, 32, [100, 60], new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight, Window = (50, 0), SequenceLengths = [new(4, 160), new(2, 120)] }),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_step_against_the_cache_gives_the_bits_of_the_step_against_tensors(string name)
    {
        var c = Make(name);
        var q = TestData.Normal("Q", 1, c.Batch, c.Heads, c.Nq, c.KeyDim);
        var cache = new KeyValueCache(c.Batch, c.KvHeads, c.KeyDim, c.ValueDim, c.Options.BlockSize);
        var keys = new List<AttentionTensor>();
        var values = new List<AttentionTensor>();
        for (int a = 0; a < c.Appends.Length; a++)
        {
            keys.Add(TestData.Normal("K", 10 + a, c.Batch, c.KvHeads, c.Appends[a], c.KeyDim));
            values.Add(TestData.Normal("V", 20 + a, c.Batch, c.KvHeads, c.Appends[a], c.ValueDim));
            cache.Append(keys[^1], values[^1]);
            var k = TestData.ConcatSeq(keys);
            var v = TestData.ConcatSeq(values);
            // Lengths past the keys appended so far are cut to them.
            var options = c.Options with
            {
                KeyLengths = c.Options.KeyLengths?.Select(n => Math.Min(n, k.Seq)).ToArray(),
                SequenceLengths = c.Options.SequenceLengths?.Select(l => l with { Key = Math.Min(l.Key, k.Seq) }).ToArray(),
            };
            Assert.Equal(k.Seq, cache.Length);

            // Every width and thread count after the last append; the default after the others.
            bool last = a == c.Appends.Length - 1;
            var reference = last ? ReferenceAttention.Compute(q, k, v, options) : null;
            foreach (var path in last ? [KernelPath.Scalar, KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512] : new[] { KernelPath.Auto })
            {
                foreach (int threads in last ? [1, 2] : new[] { 2 })
                {
                    var settings = new ComputeOptions { KernelPath = path, Threads = threads };
                    var expected = Attention.Compute(q, k, v, options, settings);
                    var actual = Attention.Compute(q, cache, options, settings);
                    string context = $"{name}, {k.Seq} keys, {path}, {threads} threads";
                    TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"{context}: out");
                    TestData.AssertBitwise(expected.Lse, actual.Lse, $"{context}: lse");
                    if (options.Entropy)
                    {
                        TestData.AssertBitwise(expected.Entropy, actual.Entropy, $"{context}: entropy");
                    }

                    if (reference is not null)
                    {
                        TestData.AssertWithinContract(actual, reference, context);
                    }
                }
            }
        }
    }

    [Fact]
    public void Truncating_drops_the_last_keys_and_the_next_append_continues_from_there()
    {
        // Speculative decoding: draft tokens appended, some rejected, others appended in their place.
        var cache = new KeyValueCache(1, 2, 16, 24, blockSize: 64);
        var k = TestData.Normal("K", 1, 1, 2, 300, 16);
        var v = TestData.Normal("V", 2, 1, 2, 300, 24);
        cache.Append(k, v);
        cache.Truncate(130);
        var k2 = TestData.Normal("K", 3, 1, 2, 5, 16);
        var v2 = TestData.Normal("V", 4, 1, 2, 5, 24);
        cache.Append(k2, v2);
        Assert.Equal(135, cache.Length);

        var q = TestData.Normal("Q", 5, 1, 8, 5, 16);
        var options = new AttentionOptions { BlockSize = 64, Causal = true, Alignment = DiagonalAlignment.BottomRight };
        var expected = Attention.Compute(q, TestData.ConcatSeq([Head(k, 130), k2]), TestData.ConcatSeq([Head(v, 130), v2]), options);
        var actual = Attention.Compute(q, cache, options);
        TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, "after truncating to 130 and appending 5: out");
        TestData.AssertBitwise(expected.Lse, actual.Lse, "after truncating to 130 and appending 5: lse");

        Assert.Contains("cannot truncate 135 keys to 136", Assert.Throws<AttentionInputException>(() => cache.Truncate(136)).Message);
        cache.Truncate(0);
        Assert.Contains("holds no keys yet", Assert.Throws<AttentionInputException>(() => Attention.Compute(q, cache, options)).Message);
    }

    [Fact]
    public void A_bad_append_names_the_value_and_leaves_the_cache_as_it_was()
    {
        var cache = new KeyValueCache(2, 2, 8, 8);
        var k = TestData.Normal("K", 1, 2, 2, 40, 8);
        var v = TestData.Normal("V", 2, 2, 2, 40, 8);
        cache.Append(k, v);
        var q = TestData.Normal("Q", 3, 2, 4, 1, 8);
        var before = Attention.Compute(q, cache);

        var bad = TestData.Normal("K", 4, 2, 2, 10, 8);
        bad.Data.Span[(int)bad.RowOffset(1, 0, 2) + 5] = float.NaN;
        var error = Assert.Throws<AttentionInputException>(() => cache.Append(bad, TestData.Normal("V", 5, 2, 2, 10, 8)));
        Assert.Contains("K[1, 0, 2, 5] is NaN", error.Message);

        var badValues = TestData.Normal("V", 6, 2, 2, 10, 8);
        badValues.Data.Span[77] = float.PositiveInfinity;
        Assert.Contains("V[0, 0, 9, 5] is Infinity", Assert.Throws<AttentionInputException>(() => cache.Append(TestData.Normal("K", 7, 2, 2, 10, 8), badValues)).Message);

        Assert.Equal(40, cache.Length);
        var after = Attention.Compute(q, cache);
        TestData.AssertBitwise(before.Output.Data.Span, after.Output.Data.Span, "after the refused appends: out");
    }

    public static TheoryData<string, string> Refusals => new()
    {
        { "keys of another width", "does not append to [2, 2, n, 8] keys" },
        { "values of another length", "does not hold the values of the 4 keys" },
        { "no keys yet", "holds no keys yet" },
        { "another block size", $"holds blocks of {AttentionOptions.DefaultBlockSize} keys but the options ask for blocks of 64" },
        { "cosine", "the Cosine score does not read" },
        { "257 query rows", "has 257 query rows per head" },
        { "a NaN in Q", "Q[0, 3, 0, 1] is NaN" },
        { "scores that could overflow", "scores could overflow float32" },
        { "a cache of blocks of 40", "block size 40 must be a multiple of 16 between 16 and 4096" },
        { "heads not a multiple", "Q's 3 heads are not a multiple of K/V's 2 heads" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void A_wrong_call_is_refused_with_a_message_naming_what_is_wrong(string what, string expected)
    {
        var cache = new KeyValueCache(2, 2, 8, 8);
        var k = TestData.Normal("K", 1, 2, 2, 4, 8);
        var v = TestData.Normal("V", 2, 2, 2, 4, 8);
        var q = TestData.Normal("Q", 3, 2, 4, 1, 8);
        if (what != "no keys yet")
        {
            cache.Append(k, v);
        }

        void NaNInQ()
        {
            q.Data.Span[(int)q.RowOffset(0, 3, 0) + 1] = float.NaN;
            Attention.Compute(q, cache);
        }

        void HugeScores()
        {
            cache.Append(TestData.Normal("K", 8, 2, 2, 1, 8, std: 1e19f), TestData.Normal("V", 9, 2, 2, 1, 8));
            Attention.Compute(TestData.Normal("Q", 3, 2, 4, 1, 8, std: 1e19f), cache);
        }

        Action call = what switch
        {
            "keys of another width" => () => cache.Append(TestData.Normal("K", 1, 2, 2, 4, 16), v),
            "values of another length" => () => cache.Append(k, TestData.Normal("V", 2, 2, 2, 5, 8)),
            "no keys yet" => () => Attention.Compute(q, cache),
            "another block size" => () => Attention.Compute(q, cache, new AttentionOptions { BlockSize = 64 }),
            "cosine" => () => Attention.Compute(q, cache, new AttentionOptions { Score = ScoreFunction.Cosine }),
            "257 query rows" => () => Attention.Compute(TestData.Normal("Q", 3, 2, 4, 257, 8), cache),
            "a NaN in Q" => NaNInQ,
            "scores that could overflow" => HugeScores,
            "a cache of blocks of 40" => () => _ = new KeyValueCache(2, 2, 8, 8, blockSize: 40),
            "heads not a multiple" => () => Attention.Compute(TestData.Normal("Q", 3, 2, 3, 1, 8), cache),
            _ => throw new ArgumentException(what),
        };

        var error = Assert.Throws<AttentionInputException>(call);
        Assert.Contains(expected, error.Message);
    }

    /// <summary>The first <paramref name="count"/> rows of every (batch, head) of <paramref name="t"/>.</summary>
    private static AttentionTensor Head(AttentionTensor t, int count)
    {
        var data = new float[t.Batch * t.Heads * count * t.Dim];
        for (int plane = 0; plane < t.Batch * t.Heads; plane++)
        {
            t.Data.Span.Slice(plane * t.Seq * t.Dim, count * t.Dim).CopyTo(data.AsSpan(plane * count * t.Dim));
        }

        return AttentionTensor.FromArray(t.Name, data, t.Batch, t.Heads, count, t.Dim);
    }
}
