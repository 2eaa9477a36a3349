using AttentionActors.Kernels.Reference;

namespace AttentionActors.Kernels.Tests;

/// <summary>
/// ALiBi as FlashAttention and the ALiBi paper's encoders pose it: the bias −slope·|i + D − j| around
/// the aligned diagonal, on both sides of it, with slopes per head or per batch and head.
/// </summary>
public class AlibiTests
{
    /// <summary>
    /// All scores 0 and V the identity, so each output row is its weight row: a_ij ∝ e^(−slope·|i + D − j|),
    /// written here in closed form. Keys after the diagonal are penalised like keys before it.
    /// </summary>
    [Theory]
    [InlineData(5, 5, DiagonalAlignment.TopLeft)]
    [InlineData(2, 6, DiagonalAlignment.BottomRight)]
    [InlineData(6, 3, DiagonalAlignment.TopLeft)]
    [InlineData(6, 3, DiagonalAlignment.BottomRight)]
    public void Bidirectional_weights_fall_off_with_the_distance_to_the_aligned_diagonal_on_both_sides(int nq, int nk, DiagonalAlignment alignment)
    {
        const float slope = 0.75f;
        var q = AttentionTensor.Zeros("Q", 1, 1, nq, 4);
        var k = AttentionTensor.Zeros("K", 1, 1, nk, 4);
        var v = AttentionTensor.Zeros("V", 1, 1, nk, nk);
        for (int j = 0; j < nk; j++)
        {
            v.Data.Span[(j * nk) + j] = 1f;
        }

        var result = Attention.Compute(q, k, v, new AttentionOptions { AlibiSlopes = [slope], Alignment = alignment, BlockSize = 16 });
        long offset = alignment == DiagonalAlignment.BottomRight ? nk - nq : 0;
        var expected = new double[nq * nk];
        for (int i = 0; i < nq; i++)
        {
            double sum = 0;
            for (int j = 0; j < nk; j++)
            {
                sum += Math.Exp(-slope * Math.Abs(i + offset - j));
            }

            for (int j = 0; j < nk; j++)
            {
                expected[(i * nk) + j] = Math.Exp(-slope * Math.Abs(i + offset - j)) / sum;
            }
        }

        TestData.AssertClose(result.Output.Data.Span, expected, $"weights of Nq {nq}, Nk {nk}, {alignment}");
    }

    public static TheoryData<string> Cases => ["dense", "cross bottom-right window", "per batch and head, GQA", "causal top-left", "causal bottom-right cross", "cosine", "additive", "gaussian", "soft cap"];

    public static (int B, int H, int Hk, int Nq, int Nk, AttentionOptions Options) Case(string name) => name switch
    {
        "dense" => (1, 4, 4, 150, 150, new AttentionOptions { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(4), BlockSize = 32 }),
        "cross bottom-right window" => (2, 2, 1, 70, 230, new AttentionOptions { AlibiSlopes = [0.3f, 0.05f], Alignment = DiagonalAlignment.BottomRight, Window = (48, 16), BlockSize = 32 }),
        "per batch and head, GQA" => (3, 6, 2, 90, 130, new AttentionOptions { AlibiSlopes = [.. Enumerable.Range(0, 18).Select(i => 0.02f * (i + 1))], Alignment = DiagonalAlignment.TopLeft, KeyLengths = [130, 64, 1], BlockSize = 16 }),
        "causal top-left" => (1, 3, 3, 200, 200, new AttentionOptions { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(3), Causal = true, BlockSize = 64 }),
        "causal bottom-right cross" => (1, 2, 2, 100, 260, new AttentionOptions { AlibiSlopes = [0.5f, 0.125f], Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 }),
        "cosine" => (1, 2, 2, 80, 80, new AttentionOptions { AlibiSlopes = [0.2f, 0.9f], Score = ScoreFunction.Cosine, Temperature = 0.1f, BlockSize = 16 }),
        "additive" => (1, 2, 2, 60, 90, new AttentionOptions { AlibiSlopes = [0.2f, 0.4f], Alignment = DiagonalAlignment.BottomRight, Score = ScoreFunction.Additive, Additive = new AdditiveParameters(TestData.Uniform(48, 1), TestData.Uniform(48, 2), TestData.Uniform(6, 3)), BlockSize = 16 }),
        "gaussian" => (1, 2, 1, 90, 60, new AttentionOptions { AlibiSlopes = [0.1f, 0.6f], Alignment = DiagonalAlignment.TopLeft, Score = ScoreFunction.Gaussian, Sigma = 2f, BlockSize = 16 }),
        _ => (1, 2, 2, 120, 120, new AttentionOptions { AlibiSlopes = [-0.05f, 0.25f], SoftCap = 5f, Window = (30, 30), BlockSize = 16 }),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Alibi_matches_the_reference_with_every_mask_and_score(string name)
    {
        var (b, h, hk, nq, nk, options) = Case(name);
        var (q, k, v) = TestData.Qkv(name.Length + 700, b, h, hk, nq, nk, 8, 8);
        TestData.AssertWithinContract(Attention.Compute(q, k, v, options), ReferenceAttention.Compute(q, k, v, options), name);
    }

    [Fact]
    public void Causal_alibi_keeps_the_weights_of_the_old_one_sided_bias_and_moves_the_lse_by_slope_times_the_offset()
    {
        // Under a causal mask |i + D − j| = i + D − j: the bias is −slope·(i − j) − slope·D, a per-row
        // constant away from the one-sided −slope·(i − j). The output is unchanged; the lse moves by −slope·D.
        const int nq = 50, nk = 120;
        var (q, k, v) = TestData.Qkv(41, 1, 2, 2, nq, nk, 8, 8);
        float[] slopes = [0.25f, 0.0625f];
        var options = new AttentionOptions { AlibiSlopes = slopes, Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 16 };
        var actual = Attention.Compute(q, k, v, options);
        var plain = ReferenceAttention.Compute(q, k, v, options with { AlibiSlopes = null });
        var oneSided = new double[2 * nq];
        var outOneSided = new double[2 * nq * 8];
        for (int h = 0; h < 2; h++)
        {
            for (int i = 0; i < nq; i++)
            {
                // The one-sided bias in float64: weights ∝ e^(s_ij − slope·(i − j)) over the keys j ≤ i + D.
                var weights = new double[nk];
                var scores = new double[nk];
                ReferenceAttention.WeightRow(q, k, options with { AlibiSlopes = null }, 0, h, i, weights, scores);
                double m = double.NegativeInfinity;
                for (int j = 0; j <= i + nk - nq; j++)
                {
                    scores[j] -= slopes[h] * (i - j);
                    m = Math.Max(m, scores[j]);
                }

                double l = 0;
                for (int j = 0; j <= i + nk - nq; j++)
                {
                    l += Math.Exp(scores[j] - m);
                }

                oneSided[(h * nq) + i] = m + Math.Log(l) - (slopes[h] * (nk - nq));
                for (int j = 0; j <= i + nk - nq; j++)
                {
                    for (int c = 0; c < 8; c++)
                    {
                        outOneSided[(((h * nq) + i) * 8) + c] += Math.Exp(scores[j] - m) / l * v.Data.Span[(int)v.RowOffset(0, h, j) + c];
                    }
                }
            }
        }

        Assert.NotEqual(plain.Lse[0], actual.Lse[0]);
        TestData.AssertClose(actual.Output.Data.Span, outOneSided, "output against the one-sided bias");
        TestData.AssertClose(actual.Lse, oneSided, "lse against the one-sided bias's minus slope·D");
    }

    [Fact]
    public void Default_slopes_are_the_papers_for_any_head_count()
    {
        // Press et al.'s get_slopes: 2^(−8k/H) for H a power of two; else those of the largest power of
        // two P below H followed by every other slope of 2P. Values as its reference code gives them.
        Assert.Equal([0.0625f, 0.00390625f], AttentionOptions.DefaultAlibiSlopes(2));
        Assert.Equal([0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f, 0.0078125f, 0.00390625f], AttentionOptions.DefaultAlibiSlopes(8));
        Assert.Equal([0.0625f, 0.00390625f, 0.25f], AttentionOptions.DefaultAlibiSlopes(3));
        var twelve = AttentionOptions.DefaultAlibiSlopes(12);
        Assert.Equal(AttentionOptions.DefaultAlibiSlopes(8), twelve[..8]);
        Assert.Equal([0.70710677f, 0.35355338f, 0.17677669f, 0.088388346f], twelve[8..]);
    }
}
