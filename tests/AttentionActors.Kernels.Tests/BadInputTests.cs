namespace AttentionActors.Kernels.Tests;

/// <summary>Every bad input is refused before computing, with a message naming what is wrong.</summary>
public class BadInputTests
{
    private static AttentionInputException Refused(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions? options = null)
        => Assert.Throws<AttentionInputException>(() => Attention.Compute(q, k, v, options));

    private static (AttentionTensor Q, AttentionTensor K, AttentionTensor V) Good() => TestData.Qkv(1, 2, 4, 2, 10, 12, 8, 6);

    [Theory]
    [InlineData("Q", float.NaN, "Q[1, 2, 3, 4] is NaN")]
    [InlineData("K", float.PositiveInfinity, "K[1, 1, 3, 4] is ∞")]
    [InlineData("V", float.NegativeInfinity, "V[1, 1, 3, 4] is -∞")]
    public void A_non_finite_value_is_named_with_its_tensor_and_index(string tensor, float value, string expected)
    {
        var (q, k, v) = Good();
        var t = tensor switch { "Q" => q, "K" => k, _ => v };
        t.Data.Span[(int)t.RowOffset(1, tensor == "Q" ? 2 : 1, 3) + 4] = value;
        var ex = Refused(q, k, v);
        Assert.Contains(expected, ex.Message.Replace("Infinity", "∞", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void A_tensor_checked_on_every_core_names_its_first_non_finite_value_and_its_largest_row()
    {
        // K [1, 2, 2^17, 64]: 2^24 values, the size from which a tensor is checked in parallel
        // chunks of 2^14 rows. Two NaNs, the later one in an earlier-finishing chunk on any
        // schedule; then, without them, one large row near the end sets the reported norm.
        int keys = 1 << 17, dim = 64;
        Assert.Equal(ProblemValidator.ParallelValues, 2L * keys * dim);
        var q = TestData.Normal("Q", 1, 1, 2, 4, dim);
        var k = AttentionTensor.Zeros("K", 1, 2, keys, dim);
        var v = AttentionTensor.Zeros("V", 1, 2, keys, dim);
        var kData = k.Data.Span;
        kData[(int)k.RowOffset(0, 1, 100_000) + 7] = float.NaN; // chunk 14
        kData[(int)k.RowOffset(0, 0, 3) + 5] = float.NaN; // chunk 0, row 3
        var nan = Assert.Throws<AttentionInputException>(() => AttentionProblem.Create(q, k, v));
        Assert.Contains("K[0, 0, 3, 5] is NaN", nan.Message, StringComparison.Ordinal);

        kData.Clear();
        var far = kData.Slice((int)k.RowOffset(0, 1, keys - 2), dim);
        far.Fill(1e36f); // ‖row‖ = 8e36 (squared in float64: beyond float32), ‖Q‖·‖K‖ beyond the sums
        var overflow = Assert.Throws<AttentionInputException>(() => AttentionProblem.Create(q, k, v));
        Assert.Contains("‖K‖ 8E+36", overflow.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Shape_mismatches_name_both_tensors()
    {
        var (q, k, v) = Good();
        Assert.Contains("not a multiple", Refused(TestData.Normal("Q", 1, 2, 3, 10, 8), k, v).Message, StringComparison.Ordinal);
        Assert.Contains("Q's dim 8 differs from K's dim 7", Refused(q, TestData.Normal("K", 1, 2, 2, 12, 7), v).Message, StringComparison.Ordinal);
        Assert.Contains("K has 12 keys but V has 11", Refused(q, k, TestData.Normal("V", 1, 2, 2, 11, 6)).Message, StringComparison.Ordinal);
        Assert.Contains("batch sizes differ", Refused(q, TestData.Normal("K", 1, 1, 2, 12, 8), v).Message, StringComparison.Ordinal);
        Assert.Contains("K has 2 heads but V has 1", Refused(q, k, TestData.Normal("V", 1, 2, 1, 12, 6)).Message, StringComparison.Ordinal);
        Assert.Throws<AttentionInputException>(() => new AttentionTensor("Q", new float[5], 1, 1, 2, 3));
    }

    [Fact]
    public void Bad_options_are_named()
    {
        var (q, k, v) = Good();
        var cases = new (AttentionOptions Options, string Expected)[]
        {
            (new() { BlockSize = 20 }, "block size 20"),
            (new() { Scale = float.NaN }, "scale NaN"),
            (new() { Score = ScoreFunction.Cosine, Temperature = 0 }, "temperature 0"),
            (new() { Score = ScoreFunction.Gaussian, Sigma = -1 }, "sigma -1"),
            (new() { SoftCap = float.PositiveInfinity }, "soft-cap"),
            (new() { AlibiSlopes = [1f] }, "1 slopes; Q's 4 heads need [4] or, per batch"),
            (new() { AlibiSlopes = [1f, 1f, float.NaN, 1f] }, "ALiBi slopes[2] is NaN"),
            (new() { KeyLengths = [3] }, "1 key lengths given for a batch of 2"),
            (new() { KeyLengths = [3, -1] }, "key length -1 of batch 1"),
            (new() { KeyLengths = [13, 1] }, "key length 13 of batch 0 is outside [0, 12]"),
            (new() { Window = (-2, 3) }, "window (-2, 3)"),
            (new() { Causal = true }, "needs an explicit alignment"),
            (new() { Score = ScoreFunction.Additive }, "additive attention needs"),
            (new() { Score = ScoreFunction.Additive, Additive = new([1f], [1f], [1f]) }, "[d_k = 8, d_a = 1] needs 8"),
            (new() { Additive = new([1f], [1f], [1f]) }, "score function is Dot"),
            (new() { Scale = 1e30f }, "logits could reach"),
        };
        foreach (var (options, expected) in cases)
        {
            var ex = Refused(q, k, v, options);
            Assert.True(ex.Message.Contains(expected, StringComparison.Ordinal), $"expected “{expected}” in “{ex.Message}”");
        }
    }

    [Fact]
    public void Values_that_would_overflow_float32_sums_are_refused()
    {
        var (q, k, v) = Good();
        v.Data.Span[0] = 1e37f;
        Assert.Contains("rescale V", Refused(q, k, v).Message, StringComparison.Ordinal);
        (q, k, v) = Good();
        q.Data.Span[0] = 3e20f;
        k.Data.Span[0] = 3e20f;
        Assert.Contains("could overflow float32", Refused(q, k, v).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Partial_ranges_outside_the_problem_are_refused()
    {
        var (q, k, v) = Good();
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 16 });
        Assert.Throws<ArgumentOutOfRangeException>(() => Attention.ComputePartials(p, 0, 0, 5, 6, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Attention.ComputePartials(p, 0, 4, 0, 1, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Attention.ComputePartials(p, 0, 0, 0, 1, 0, 2));
    }
}
