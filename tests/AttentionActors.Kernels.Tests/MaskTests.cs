using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tests;

/// <summary>Explicit masks (PyTorch's attn_mask): against float64, bit for bit across plans, widths and threads, and refused when bad.</summary>
public class MaskTests
{
    public static TheoryData<string> Cases => ["bool dense", "additive per head, causal", "bool gqa window bottom-right", "documents, padding", "holes in blocks", "cosine alibi", "additive score soft cap", "gaussian per batch", "fully masked rows"];

    /// <summary>A problem and its mask: B, H, Hk, Nq, Nk, options, the mask's batch and head planes, and how its values are drawn.</summary>
    public static (AttentionProblem Problem, AttentionMask Mask) Case(string name)
    {
        var (b, h, hk, nq, nk, options, mb, mh) = name switch
        {
            "bool dense" => (1, 2, 2, 130, 170, new AttentionOptions { BlockSize = 32 }, 1, 1),
            "additive per head, causal" => (2, 3, 3, 90, 90, new AttentionOptions { Causal = true, BlockSize = 16 }, 2, 3),
            "bool gqa window bottom-right" => (1, 4, 2, 70, 200, new AttentionOptions { Window = (60, 8), Alignment = DiagonalAlignment.BottomRight, BlockSize = 16 }, 1, 4),
            "documents, padding" => (2, 2, 1, 160, 160, new AttentionOptions { KeyLengths = [160, 101], BlockSize = 16 }, 1, 1),
            "holes in blocks" => (1, 2, 2, 100, 256, new AttentionOptions { BlockSize = 32 }, 1, 2),
            "cosine alibi" => (1, 2, 2, 80, 80, new AttentionOptions { Score = ScoreFunction.Cosine, Temperature = 0.2f, AlibiSlopes = [0.1f, 0.3f], BlockSize = 16 }, 1, 1),
            "additive score soft cap" => (1, 2, 2, 60, 90, new AttentionOptions { Score = ScoreFunction.Additive, Additive = new AdditiveParameters(TestData.Uniform(48, 1), TestData.Uniform(48, 2), TestData.Uniform(6, 3)), SoftCap = 3f, BlockSize = 16 }, 1, 2),
            "gaussian per batch" => (3, 2, 1, 50, 75, new AttentionOptions { Score = ScoreFunction.Gaussian, Sigma = 2f, BlockSize = 16 }, 3, 1),
            _ => (1, 2, 2, 96, 96, new AttentionOptions { Causal = true, BlockSize = 16 }, 1, 2),
        };
        var (q, k, v) = TestData.Qkv(name.Length + 900, b, h, hk, nq, nk, 8, 8);
        var rng = new Random(name.Length);
        var values = new float[(long)mb * mh * nq * nk];
        for (int plane = 0; plane < mb * mh; plane++)
        {
            for (int i = 0; i < nq; i++)
            {
                for (int j = 0; j < nk; j++)
                {
                    bool allowed = name switch
                    {
                        "documents, padding" => i / 48 == j / 48,
                        "holes in blocks" => (j / 32) % 3 != (i + plane) % 3,
                        "fully masked rows" => i % 5 != plane && j % 7 != 0,
                        _ => rng.NextDouble() < 0.7,
                    };
                    float bias = name.StartsWith("bool", StringComparison.Ordinal) || name is "documents, padding" or "holes in blocks" ? 0f : (float)((rng.NextDouble() * 4) - 2);
                    values[((((long)plane * nq) + i) * nk) + j] = allowed ? bias : float.NegativeInfinity;
                }
            }
        }

        var mask = AttentionMask.Additive(values, mb, mh, nq, nk);
        return (AttentionProblem.Create(q, k, v, options, mask), mask);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Masked_attention_matches_the_float64_reference(string name)
    {
        var (p, mask) = Case(name);
        var reference = ReferenceAttention.Compute(p.Q, p.K, p.V, p.Options, mask);
        TestData.AssertWithinContract(Attention.Compute(p), reference, name);
        if (name == "fully masked rows")
        {
            // Rows i ≡ plane (mod 5) may attend nothing: output 0 and lse −∞ (PyTorch's SDPA gives NaN there).
            var result = Attention.Compute(p);
            Assert.True(float.IsNegativeInfinity(result.Lse[5]), $"lse of the fully masked row 5 of head 0 is {result.Lse[5]}");
            Assert.True(result.Output.Data.Span.Slice(5 * 8, 8).IndexOfAnyExcept(0f) < 0, "output of the fully masked row 5 is not 0");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Any_shard_plan_width_and_thread_count_gives_the_same_bits(string name)
    {
        var (p, _) = Case(name);
        var single = Attention.Compute(p, new ComputeOptions { Threads = 1, KernelPath = KernelPath.Scalar });
        foreach (var path in new[] { KernelPath.Vector128, KernelPath.Vector256, KernelPath.Auto })
        {
            var other = Attention.Compute(p, new ComputeOptions { Threads = 2, KernelPath = path });
            TestData.AssertBitwise(single.Output.Data.Span, other.Output.Data.Span, $"{name}, {path}: out");
            TestData.AssertBitwise(single.Lse, other.Lse, $"{name}, {path}: lse");
        }

        var rng = new Random(name.Length * 7);
        for (int trial = 0; trial < 16; trial++)
        {
            int b = rng.Next(p.Batch), h = rng.Next(p.Heads);
            int r0 = rng.Next(p.QuerySeq), rows = rng.Next(1, p.QuerySeq - r0 + 1);
            var cuts = Enumerable.Range(1, p.BlockCount - 1).OrderBy(_ => rng.Next()).Take(rng.Next(0, p.BlockCount)).Append(0).Append(p.BlockCount).Order().ToList();
            var pieces = cuts.Zip(cuts.Skip(1)).Select(r =>
            {
                // Each piece from its own copied data, as a worker in another process gets it.
                var view = ShardInput.Slice(p, b, h, r0, rows, r.First, r.Second);
                var copy = view with { Q = view.Q.ToArray(), K = view.K.ToArray(), V = view.V.ToArray(), Mask = view.CompactMask().ToArray(), MaskStride = 0 };
                return Attention.ComputePartials(copy, trial % 2 == 0 ? KernelPath.Scalar : KernelPath.Auto);
            }).OrderBy(_ => rng.Next()).ToList();
            var output = new float[rows * p.ValueDim];
            var lse = new float[rows];
            CanonicalTree.Finalize(CanonicalTree.Reduce(p.BlockCount, pieces), output, lse);
            long offset = single.Output.RowOffset(b, h, r0);
            TestData.AssertBitwise(single.Output.Data.Span.Slice((int)offset, rows * p.ValueDim), output, $"{name}, {pieces.Count} shards of rows [{r0}, {r0 + rows}) of ({b}, {h}): out");
            TestData.AssertBitwise(single.Lse.AsSpan((int)(offset / p.ValueDim), rows), lse, $"{name}, shards: lse");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_boolean_mask_of_the_causal_pattern_gives_the_bits_of_the_built_in_causal_mask(bool padded)
    {
        const int nq = 150, nk = 230;
        var (q, k, v) = TestData.Qkv(77, 2, 2, 2, nq, nk, 16, 8);
        var options = new AttentionOptions { BlockSize = 32, KeyLengths = padded ? [230, 111] : null };
        var allowed = new bool[nq * nk];
        for (int i = 0; i < nq; i++)
        {
            for (int j = 0; j < nk; j++)
            {
                allowed[(i * nk) + j] = j <= i + nk - nq;
            }
        }

        var masked = Attention.Compute(AttentionProblem.Create(q, k, v, options, AttentionMask.Boolean(allowed, 1, 1, nq, nk)));
        var causal = Attention.Compute(q, k, v, options with { Causal = true, Alignment = DiagonalAlignment.BottomRight });
        TestData.AssertBitwise(causal.Output.Data.Span, masked.Output.Data.Span, "out");
        TestData.AssertBitwise(causal.Lse, masked.Lse, "lse");
    }

    [Theory]
    [InlineData("additive per head, causal")]
    [InlineData("holes in blocks")]
    [InlineData("fully masked rows")]
    public void Entropy_and_coverage_see_the_mask(string name)
    {
        var (p, mask) = Case(name);
        var result = Attention.Compute(p);
        var inspected = Inspection.Compute(p, result.Lse, coverage: true);
        var (entropy, coverage) = ReferenceAttention.Inspect(p.Q, p.K, p.Options, mask);
        TestData.AssertClose(inspected.Coverage!, coverage, $"{name}: coverage");
        TestData.AssertClose(inspected.Entropy, entropy, $"{name}: entropy, second pass");
        var withEntropy = Attention.Compute(AttentionProblem.Create(p.Q, p.K, p.V, p.Options with { Entropy = true }, mask));
        TestData.AssertClose(withEntropy.Entropy!, entropy, $"{name}: entropy, with the attention");
    }

    [Fact]
    public void Bad_masks_are_refused_naming_the_element_and_the_rule()
    {
        var (q, k, v) = TestData.Qkv(5, 2, 4, 4, 10, 12, 8, 8);
        float[] Values(int count, int at, float bad)
        {
            var x = new float[count];
            x[at] = bad;
            return x;
        }

        var nan = Assert.Throws<AttentionInputException>(() => AttentionMask.Additive(Values(120, 37, float.NaN), 1, 1, 10, 12));
        Assert.Contains("mask[0, 0, 3, 1] is NaN", nan.Message);
        var inf = Assert.Throws<AttentionInputException>(() => AttentionMask.Additive(Values(480, 250, float.PositiveInfinity), 1, 4, 10, 12));
        Assert.Contains("mask[0, 2, 0, 10]", inf.Message);
        var lowest = Assert.Throws<AttentionInputException>(() => AttentionMask.Additive(Values(120, 0, float.MinValue), 1, 1, 10, 12));
        Assert.Contains("write −inf", lowest.Message);
        var shape = Assert.Throws<AttentionInputException>(() => AttentionProblem.Create(q, k, v, null, AttentionMask.Additive(new float[3 * 10 * 12], 3, 1, 10, 12)));
        Assert.Contains("does not broadcast", shape.Message);
        var seq = Assert.Throws<AttentionInputException>(() => AttentionProblem.Create(q, k, v, null, AttentionMask.Additive(new float[10 * 11], 1, 1, 10, 11)));
        Assert.Contains("does not fit", seq.Message);
        var large = Assert.Throws<AttentionInputException>(() => AttentionMask.Additive(new float[16], 2, 8, 1 << 14, 1 << 9));
        Assert.Contains("more than the 67108864", large.Message);
        var count = Assert.Throws<AttentionInputException>(() => AttentionMask.Additive(new float[119], 1, 1, 10, 12));
        Assert.Contains("needs 120 values but holds 119", count.Message);
    }

    [Fact]
    public void A_shard_with_a_bad_or_missing_mask_is_refused_before_it_is_computed()
    {
        var (p, _) = Case("bool dense");
        var view = ShardInput.Slice(p, 0, 1, 10, 20, 1, 3);
        var poisoned = view.Mask.ToArray();
        poisoned[45] = float.NaN;
        var bad = Assert.Throws<AttentionInputException>(() => Attention.ComputePartials(view with { Mask = poisoned }));
        Assert.Contains("is NaN", bad.Message);
        var missing = Assert.Throws<AttentionInputException>(() => Attention.ComputePartials(view with { Mask = ReadOnlyMemory<float>.Empty }));
        Assert.Contains("needs 3294 values but holds 0", missing.Message);
        var (plain, _) = Case("bool dense");
        var unmasked = ShardInput.Slice(AttentionProblem.Create(plain.Q, plain.K, plain.V, plain.Options), 0, 1, 10, 20, 1, 3);
        var stray = Assert.Throws<AttentionInputException>(() => Attention.ComputePartials(unmasked with { Mask = view.Mask }));
        Assert.Contains("has no explicit mask", stray.Message);
    }
}
