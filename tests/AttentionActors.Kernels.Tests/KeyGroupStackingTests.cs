namespace AttentionActors.Kernels.Tests;

/// <summary>
/// A decoding step's query heads stacked per K/V head (<see cref="KeyGroupStacking"/>): the same
/// memory, the bits of the problem itself, and only where no option depends on a row's position or head.
/// </summary>
public sealed class KeyGroupStackingTests
{
    public static TheoryData<string> Stackable => ["one row, GQA 4, padding, entropy", "one row, causal bottom-right, padding", "five rows, MQA, cosine + soft-cap", "128 rows, GQA 2, gaussian", "additive", "16 rows, causal bottom-right (speculative decoding)", "one row, causal top-left", "two rows, window", "rows as many as keys, causal, no alignment"];

    public static TheoryData<string> NotStackable => ["no shared K/V heads", "257 rows", "ALiBi", "variable lengths", "explicit mask", "segmented Q", "windowed Q", "segmented output", "output of the stacked shape"];

    private static AttentionProblem Decode(int nq, int h, int hk, AttentionOptions options, AttentionMask? mask = null)
    {
        var (q, k, v) = TestData.Qkv(nq + (7 * h) + hk, 2, h, hk, nq, 700, 24, 16);
        return AttentionProblem.Create(q, k, v, options, mask);
    }

    private static AttentionProblem StackableCase(string name) => name switch
    {
        "one row, GQA 4, padding, entropy" => Decode(1, 8, 2, new AttentionOptions { BlockSize = 32, KeyLengths = [700, 333], Entropy = true }),
        "one row, causal bottom-right, padding" => Decode(1, 8, 2, new AttentionOptions { BlockSize = 32, KeyLengths = [650, 333], Causal = true, Alignment = DiagonalAlignment.BottomRight, Entropy = true }),
        "five rows, MQA, cosine + soft-cap" => Decode(5, 6, 1, new AttentionOptions { BlockSize = 64, Score = ScoreFunction.Cosine, Temperature = 0.2f, SoftCap = 4f }),
        "128 rows, GQA 2, gaussian" => Decode(128, 4, 2, new AttentionOptions { BlockSize = 16, Score = ScoreFunction.Gaussian, Sigma = 2f }),
        "additive" => Decode(2, 4, 2, new AttentionOptions { BlockSize = 32, Score = ScoreFunction.Additive, Additive = new AdditiveParameters(TestData.Uniform(24 * 6, 1), TestData.Uniform(24 * 6, 2), TestData.Uniform(6, 3)) }),
        "16 rows, causal bottom-right (speculative decoding)" => Decode(16, 8, 2, new AttentionOptions { BlockSize = 16, KeyLengths = [700, 690], Causal = true, Alignment = DiagonalAlignment.BottomRight, Entropy = true }),
        "one row, causal top-left" => Decode(1, 8, 2, new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.TopLeft }),
        "two rows, window" => Decode(2, 8, 2, new AttentionOptions { BlockSize = 32, Window = (100, 0), Alignment = DiagonalAlignment.BottomRight }),
        "rows as many as keys, causal, no alignment" => Square(),
        _ => throw new ArgumentException(name),
    };

    /// <summary>A causal step of as many rows as keys without an alignment (both put the diagonal at 0); its stacked rows are not square.</summary>
    private static AttentionProblem Square()
    {
        var (q, k, v) = TestData.Qkv(21, 1, 6, 2, 40, 40, 24, 16);
        return AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 16, Causal = true });
    }

    [Theory]
    [MemberData(nameof(Stackable))]
    public void Stacked_heads_share_the_memory_and_give_the_bits_of_the_problem(string name)
    {
        var p = StackableCase(name);
        var (stacked, output) = KeyGroupStacking.TryStack(p) ?? throw new InvalidOperationException($"{name}: should stack");
        Assert.Null(output);
        Assert.Equal((p.KvHeads, 1, p.GroupSize * p.QuerySeq), (stacked.Heads, stacked.GroupSize, stacked.QuerySeq));

        // Rows keep their own diagonals where a mask needs them.
        bool diagonal = p.Options.Window is not null || (p.Options.Causal && p.DiagonalOffset < p.KeySeq - 1);
        Assert.Equal(diagonal ? p.QuerySeq : 0, stacked.Geometry.RowPeriod);
        Assert.True(stacked.Q.Data.Equals(p.Q.Data), "the stacked Q must be the problem's own buffer");
        Assert.Same(p.K, stacked.K);

        var expected = Attention.Compute(p);
        var actual = KeyGroupStacking.Unstack(p, Attention.Compute(stacked));
        Assert.Equal(expected.Output.Shape, actual.Output.Shape);
        TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"{name}, out");
        TestData.AssertBitwise(expected.Lse, actual.Lse, $"{name}, lse");
        if (p.Options.Entropy)
        {
            TestData.AssertBitwise(expected.Entropy!, actual.Entropy!, $"{name}, entropy");
        }
    }

    [Fact]
    public void Rows_in_periods_fit_only_a_plain_attention_pass_whose_rows_they_divide()
    {
        var plain = new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight };
        var g = AttentionGeometry.Create(new TensorShape("Q", 1, 2, 12, 8), new TensorShape("K", 1, 2, 100, 8), new TensorShape("V", 1, 2, 100, 8), plain);
        var periodic = g.WithRowPeriod(4);
        Assert.Equal(4, periodic.RowPeriod);
        Assert.Equal(96, periodic.DiagonalOffset);

        // Row 5 is row 1 of its head: it sees keys up to its diagonal 96 + 1.
        Assert.Equal((0, 98), periodic.VisibleKeys(0, 5));
        Assert.Same(g, g.WithRowPeriod(0));

        string Refused(Func<AttentionGeometry> make) => Assert.Throws<AttentionInputException>(() => make()).Message;
        Assert.Contains("must divide the 12 query rows", Refused(() => g.WithRowPeriod(5)));
        Assert.Contains("must divide", Refused(() => g.WithRowPeriod(-1)));
        var alibi = AttentionGeometry.Create(g.QueryShape, g.KeyShape, g.ValueShape, plain with { AlibiSlopes = [0.5f, 0.25f] });
        Assert.Contains("ALiBi", Refused(() => alibi.WithRowPeriod(4)));
        Assert.Contains("not stacked", Refused(() => periodic.ForPass(JobPass.Coverage)));
        Assert.Contains("not stacked", Refused(() => periodic.WithMask(new MaskShape(1, 1))));
    }

    [Fact]
    public void A_callers_output_is_stacked_over_its_own_buffer_and_returned_as_it_is()
    {
        var p = StackableCase("one row, GQA 4, padding, entropy");
        var output = AttentionTensor.Zeros("out", p.Batch, p.Heads, p.QuerySeq, p.ValueDim);
        var (stacked, stackedOutput) = KeyGroupStacking.TryStack(p, output) ?? throw new InvalidOperationException("should stack");
        Assert.NotNull(stackedOutput);
        Assert.True(stackedOutput.Data.Equals(output.Data), "the stacked output must be the caller's buffer");
        Assert.Equal([p.Batch, p.KvHeads, p.GroupSize * p.QuerySeq, p.ValueDim], stackedOutput.Shape);
        var result = KeyGroupStacking.Unstack(p, Attention.ComputeInto(stacked, stackedOutput), output);
        Assert.Same(output, result.Output);
        TestData.AssertBitwise(Attention.Compute(p).Output.Data.Span, output.Data.Span, "caller's output");
    }

    [Theory]
    [MemberData(nameof(NotStackable))]
    public void Rows_that_depend_on_their_position_or_head_are_not_stacked(string name)
    {
        var plain = new AttentionOptions { BlockSize = 32 };
        AttentionProblem Segmented()
        {
            var (q, k, v) = TestData.Qkv(3, 2, 8, 2, 1, 700, 24, 16);
            var planes = q.Data.ToArray();
            var segments = new Memory<float>[] { planes.AsMemory(0, 12 * 24), planes.AsMemory(12 * 24) };
            return AttentionProblem.Create(AttentionTensor.Segmented("Q", segments, 2, 8, 1, 24), k, v, plain);
        }

        AttentionProblem Windowed()
        {
            var (q, k, v) = TestData.Qkv(4, 1, 8, 2, 1, 700, 24, 16);
            var window = AttentionTensor.Window(q.ShapeInfo, q.Data[..24], 0, 0, 0, 1);
            return AttentionProblem.Create(window, k, v, plain);
        }

        var mask = AttentionMask.Boolean(Enumerable.Range(0, 2 * 700).Select(j => j % 3 != 0).ToArray(), 2, 1, 1, 700);
        AttentionTensor? output = null;
        var p = name switch
        {
            "no shared K/V heads" => Decode(1, 4, 4, plain),
            "257 rows" => Decode(257, 4, 2, plain),
            "causal" => Decode(1, 8, 2, plain with { Causal = true, Alignment = DiagonalAlignment.TopLeft }),
            "causal, two rows bottom-right" => Decode(2, 8, 2, plain with { Causal = true, Alignment = DiagonalAlignment.BottomRight }),
            "window" => Decode(2, 8, 2, plain with { Window = (100, 0), Alignment = DiagonalAlignment.BottomRight }),
            "ALiBi" => Decode(1, 8, 2, plain with { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(8), Alignment = DiagonalAlignment.BottomRight }),
            "variable lengths" => Decode(3, 8, 2, plain with { SequenceLengths = [new(3, 700), new(1, 500)] }),
            "explicit mask" => Decode(1, 8, 2, plain, mask),
            "segmented Q" => Segmented(),
            "windowed Q" => Windowed(),
            "segmented output" or "output of the stacked shape" => Decode(1, 8, 2, plain),
            _ => throw new ArgumentException(name),
        };
        if (name == "segmented output")
        {
            var data = new float[2 * 8 * 16];
            output = AttentionTensor.Segmented("out", [data.AsMemory(0, 8 * 16), data.AsMemory(8 * 16)], 2, 8, 1, 16);
        }

        // As many values as the output needs, in another shape: left to the job's own check, which refuses it.
        if (name == "output of the stacked shape")
        {
            output = AttentionTensor.Zeros("out", 2, 2, 4, 16);
        }

        Assert.Null(KeyGroupStacking.TryStack(p, output));
    }
}
