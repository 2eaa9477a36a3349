namespace AttentionActors.Kernels.Tests;

/// <summary>A shard computed from its own data (copies, as over the wire) gives the bits of the shard computed on the whole problem.</summary>
public class ShardInputTests
{
    public static TheoryData<string> Cases => ["causal bottom-right gqa", "window alibi", "padding cosine", "additive cross"];

    private static AttentionProblem Problem(string name)
    {
        var (q, k, v) = name switch
        {
            "causal bottom-right gqa" => TestData.Qkv(31, 1, 6, 2, 300, 700, 24, 16),
            "window alibi" => TestData.Qkv(32, 1, 4, 4, 520, 520, 16, 16),
            "padding cosine" => TestData.Qkv(33, 3, 2, 1, 200, 333, 8, 24),
            _ => TestData.Qkv(34, 2, 2, 2, 150, 411, 16, 8),
        };
        var options = name switch
        {
            "causal bottom-right gqa" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 },
            "window alibi" => new AttentionOptions { Window = (90, 10), AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(4), BlockSize = 48 },
            "padding cosine" => new AttentionOptions { Score = ScoreFunction.Cosine, Temperature = 0.3f, KeyLengths = [333, 0, 100], BlockSize = 16 },
            _ => new AttentionOptions { Score = ScoreFunction.Additive, Additive = new AdditiveParameters(Weights(35, 16 * 8), Weights(36, 16 * 8), Weights(37, 8)), BlockSize = 64 },
        };
        return AttentionProblem.Create(q, k, v, options);
    }

    private static float[] Weights(int seed, int n)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5))];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_shard_from_copied_inputs_equals_the_shard_on_the_whole_problem(string name)
    {
        var p = Problem(name);
        var rng = new Random(name.Length);
        for (int trial = 0; trial < 24; trial++)
        {
            int b = rng.Next(p.Batch), h = rng.Next(p.Heads);
            int r0 = rng.Next(p.QuerySeq), rows = rng.Next(1, p.QuerySeq - r0 + 1);
            int k0 = rng.Next(p.BlockCount), k1 = rng.Next(k0 + 1, p.BlockCount + 1);
            var whole = Attention.ComputePartials(p, b, h, r0, rows, k0, k1);
            var view = ShardInput.Slice(p, b, h, r0, rows, k0, k1);
            var copy = view with { Q = view.Q.ToArray(), K = view.K.ToArray(), V = view.V.ToArray() };
            var own = Attention.ComputePartials(copy);
            string where = $"{name}: {copy}";
            TestData.AssertSamePartials(whole, own, where);
        }
    }

    [Fact]
    public void Identity_rows_carry_zero_o_so_partials_are_the_same_bits_everywhere()
    {
        var p = Problem("causal bottom-right gqa");
        var set = Attention.ComputePartials(p, 0, 1, 0, 300, 12, 22);
        int identities = 0;
        for (int n = 0; n < set.Nodes.Length; n++)
        {
            for (int r = 0; r < set.Rows; r++)
            {
                if (float.IsNegativeInfinity(set.M[(n * set.Rows) + r]))
                {
                    identities++;
                    Assert.True(set.RowO(n, r).IndexOfAnyExcept(0f) < 0, $"node {set.Nodes[n]}, row {r}: an identity partial holds non-zero o");
                }
            }
        }

        Assert.True(identities > 0, "the case must contain rows that see none of the blocks");
    }

    /// <summary>
    /// A shard sliced from a problem is made of views of values <see cref="AttentionProblem.Create(AttentionTensor, AttentionTensor, AttentionTensor, AttentionOptions?)"/>
    /// checked: a worker in the same process does not scan them again. A NaN written into the
    /// tensor after that check shows it (the worker computes instead of refusing), while the same
    /// values as a copy, as they arrive from another process, are refused.
    /// </summary>
    [Fact]
    public void Views_of_a_checked_problem_are_not_scanned_again_but_copies_are()
    {
        var p = Problem("causal bottom-right gqa");
        var view = ShardInput.Slice(p, 0, 3, 40, 50, 5, 9);
        Assert.True(view.ValuesChecked);
        p.K.Data.Span[(int)p.K.RowOffset(0, 1, 167) + 2] = float.NaN;
        Attention.ComputePartials(view);

        var copy = view with { K = view.K.ToArray() };
        Assert.False(copy.ValuesChecked);
        Assert.Contains("K[0, 1, 167, 2] is NaN", Assert.Throws<AttentionInputException>(() => Attention.ComputePartials(copy)).Message, StringComparison.Ordinal);
        Assert.False((view with { Geometry = p.Geometry.ForPass(JobPass.Coverage) }).ValuesChecked);
    }

    [Fact]
    public void A_bad_shard_input_is_refused_naming_what_is_wrong()
    {
        var p = Problem("causal bottom-right gqa");
        var good = ShardInput.Slice(p, 0, 3, 40, 50, 5, 9);
        string Refused(ShardInput input) => Assert.Throws<AttentionInputException>(() => Attention.ComputePartials(input)).Message;

        Assert.Contains("holds 1199", Refused(good with { Q = good.Q[..1199] }), StringComparison.Ordinal);
        Assert.Contains("key blocks [5, 99)", Refused(good with { BlockEnd = 99 }), StringComparison.Ordinal);
        Assert.Contains("head 6", Refused(good with { Head = 6 }), StringComparison.Ordinal);
        Assert.Contains("rows [290, 340)", Refused(good with { RowStart = 290 }), StringComparison.Ordinal);

        // A NaN is named by its place in the whole tensor: K head 1 (query head 3 of group size 3), key 5·32 + 7.
        var k = good.K.ToArray();
        k[(7 * 24) + 2] = float.NaN;
        Assert.Contains("K[0, 1, 167, 2] is NaN", Refused(good with { K = k }), StringComparison.Ordinal);
    }
}
