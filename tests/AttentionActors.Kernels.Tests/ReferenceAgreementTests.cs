using AttentionActors.Kernels.Reference;

namespace AttentionActors.Kernels.Tests;

/// <summary>The fast path against the float64 reference, within the accuracy contract.</summary>
public class ReferenceAgreementTests
{
    private static void Check(int seed, int b, int h, int hk, int nq, int nk, int dk, int dv, AttentionOptions options, string context)
    {
        var (q, k, v) = TestData.Qkv(seed, b, h, hk, nq, nk, dk, dv);
        var actual = Attention.Compute(q, k, v, options);
        var expected = ReferenceAttention.Compute(q, k, v, options);
        TestData.AssertWithinContract(actual, expected, context);
    }

    [Fact]
    public void Every_query_length_0_to_257_matches_the_reference()
    {
        for (int nq = 0; nq <= 257; nq++)
        {
            int nk = ((nq * 37) + 11) % 258;
            var options = new AttentionOptions { BlockSize = 16 };
            Check(nq, 1, 2, 1, nq, nk, 5, 3, options, $"Nq={nq} Nk={nk}");
        }
    }

    [Fact]
    public void Every_key_length_0_to_257_matches_the_reference_with_masks()
    {
        for (int nk = 0; nk <= 257; nk++)
        {
            int nq = ((nk * 53) + 7) % 258;
            var alignment = nk % 2 == 0 ? DiagonalAlignment.TopLeft : DiagonalAlignment.BottomRight;
            var options = (nk % 4) switch
            {
                0 => new AttentionOptions { BlockSize = 16 },
                1 => new AttentionOptions { BlockSize = 16, Causal = true, Alignment = alignment },
                2 => new AttentionOptions { BlockSize = 32, Window = (nk % 23, nk % 7), Alignment = alignment },
                _ => new AttentionOptions { BlockSize = 16, Causal = true, Alignment = alignment, KeyLengths = [nk / 2, nk] },
            };
            Check(1000 + nk, 2, 2, 2, nq, nk, 4, 5, options, $"Nq={nq} Nk={nk} {Describe(options)}");
        }
    }

    [Theory]
    [InlineData(72, 72, false)]
    [InlineData(80, 64, true)]
    public void Awkward_shapes_seq_3816_five_heads_match_the_reference(int dk, int dv, bool causal)
    {
        var options = new AttentionOptions { Causal = causal };
        Check(3816 + dk, 1, 5, 5, 3816, 3816, dk, dv, options, $"3816×5 heads d={dk}");
    }

    [Theory]
    [InlineData(300, 1000, DiagonalAlignment.TopLeft)]
    [InlineData(300, 1000, DiagonalAlignment.BottomRight)]
    [InlineData(1000, 300, DiagonalAlignment.TopLeft)]
    [InlineData(1000, 300, DiagonalAlignment.BottomRight)]
    public void Cross_attention_with_either_causal_alignment_matches_the_reference(int nq, int nk, DiagonalAlignment alignment)
    {
        Check(nq + nk, 2, 3, 3, nq, nk, 32, 24, new AttentionOptions { Causal = true, Alignment = alignment }, $"{nq}×{nk} causal {alignment}");
        Check(nq + nk, 1, 2, 1, nq, nk, 16, 16, new AttentionOptions { Window = (40, 10), Alignment = alignment }, $"{nq}×{nk} window {alignment}");
    }

    [Theory]
    [InlineData(8, 2)]
    [InlineData(8, 1)]
    public void Grouped_and_multi_query_heads_match_the_reference(int h, int hk)
    {
        Check(h * 10 + hk, 2, h, hk, 333, 517, 64, 64, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight }, $"GQA {h}:{hk}");
    }

    [Fact]
    public void Each_score_function_matches_the_reference()
    {
        var rng = new Random(5);
        int dk = 24, da = 12;
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => TestData.Gaussian(rng) * 0.3f).ToArray();
        var cases = new (string Name, AttentionOptions Options)[]
        {
            ("dot scale 0.37", new AttentionOptions { Scale = 0.37f }),
            ("dot scale 0", new AttentionOptions { Scale = 0f }),
            ("dot scale -0.5", new AttentionOptions { Scale = -0.5f }),
            ("cosine τ 0.1", new AttentionOptions { Score = ScoreFunction.Cosine, Temperature = 0.1f }),
            ("additive", new AttentionOptions { Score = ScoreFunction.Additive, Additive = new AdditiveParameters(Rand(dk * da), Rand(dk * da), Rand(da)) }),
            ("gaussian σ 3", new AttentionOptions { Score = ScoreFunction.Gaussian, Sigma = 3f }),
            ("alibi", new AttentionOptions { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(4), Causal = true }),
            ("softcap 2", new AttentionOptions { SoftCap = 2f, Scale = 1f }),
            ("softcap + alibi + cosine", new AttentionOptions { Score = ScoreFunction.Cosine, SoftCap = 5f, AlibiSlopes = [0.1f, 0.2f, -0.05f, 0f], Temperature = 0.05f }),
            ("gaussian + window + padding", new AttentionOptions { Score = ScoreFunction.Gaussian, Sigma = 2f, Window = (30, 30), KeyLengths = [150, 301] }),
            ("additive + causal", new AttentionOptions { Score = ScoreFunction.Additive, Additive = new AdditiveParameters(Rand(dk * da), Rand(dk * da), Rand(da)), Causal = true }),
        };
        foreach (var (name, options) in cases)
        {
            Check(name.Length, 2, 4, 2, 301, 301, dk, 20, options, name);
        }
    }

    [Fact]
    public void Each_mask_and_their_combinations_match_the_reference()
    {
        var cases = new AttentionOptions[]
        {
            new() { Causal = true },
            new() { KeyLengths = [0, 1, 200, 701] },
            new() { Window = (0, 0) },
            new() { Window = (64, -1) },
            new() { Window = (-1, 5) },
            new() { Causal = true, Window = (100, 100) },
            new() { Causal = true, KeyLengths = [300, 650, 17, 701] },
            new() { Causal = true, Window = (129, 0), KeyLengths = [700, 400, 128, 129], BlockSize = 64 },
        };
        foreach (var options in cases)
        {
            Check(7, 4, 2, 1, 701, 701, 32, 32, options, Describe(options));
        }
    }

    [Fact]
    public void Logits_up_to_1e4_give_exact_softmax_without_nan()
    {
        // Integer inputs with scale 1 make every logit exact in float32 (|s| ≤ 1e4), so the
        // contract applies in full even though the logits are huge.
        var rng = new Random(11);
        int n = 200, d = 4;
        var q = new float[n * d];
        var k = new float[n * d];
        for (int i = 0; i < q.Length; i++)
        {
            q[i] = rng.Next(-50, 51);
            k[i] = rng.Next(-50, 51);
        }

        var qt = AttentionTensor.FromArray("Q", q, 1, 1, n, d);
        var kt = AttentionTensor.FromArray("K", k, 1, 1, n, d);
        var vt = TestData.Normal("V", 3, 1, 1, n, 8);
        foreach (float scale in new[] { 1f, -1f })
        {
            var options = new AttentionOptions { Scale = scale, Causal = scale < 0 };
            var actual = Attention.Compute(qt, kt, vt, options);
            TestData.AssertWithinContract(actual, ReferenceAttention.Compute(qt, kt, vt, options), $"|logit| ≤ 1e4, scale {scale}");
        }
    }

    [Fact]
    public void Fully_masked_rows_give_zero_output_and_negative_infinite_lse()
    {
        var (q, k, v) = TestData.Qkv(9, 2, 2, 2, 50, 30, 8, 8);
        var cases = new AttentionOptions[]
        {
            new() { KeyLengths = [0, 30] },
            new() { Causal = true, Alignment = DiagonalAlignment.BottomRight },
            new() { Window = (-1, 0), Alignment = DiagonalAlignment.BottomRight, KeyLengths = [3, 30] },
        };
        foreach (var options in cases)
        {
            var actual = Attention.Compute(q, k, v, options);
            var expected = ReferenceAttention.Compute(q, k, v, options);
            Assert.Contains(expected.Lse, double.IsNegativeInfinity);
            TestData.AssertWithinContract(actual, expected, Describe(options));
        }
    }

    [Fact]
    public void Empty_sequences_give_empty_or_zero_output()
    {
        var (q, k, v) = TestData.Qkv(1, 1, 2, 2, 0, 10, 8, 4);
        Assert.Equal(0, Attention.Compute(q, k, v).Output.Length);
        (q, k, v) = TestData.Qkv(1, 1, 2, 2, 10, 0, 8, 4);
        var result = Attention.Compute(q, k, v);
        Assert.All(result.Output.Data.ToArray(), x => Assert.Equal(0f, x));
        Assert.All(result.Lse, x => Assert.True(float.IsNegativeInfinity(x)));
    }

    internal static string Describe(AttentionOptions o)
        => $"block {o.BlockSize}{(o.Causal ? " causal" : "")}{(o.Alignment is { } a ? $" {a}" : "")}{(o.Window is { } w ? $" window ({w.Left},{w.Right})" : "")}{(o.KeyLengths is { } l ? $" lengths [{string.Join(',', l)}]" : "")}";
}
