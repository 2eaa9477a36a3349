using AttentionActors.Kernels.Partials;

namespace AttentionActors.Kernels.Tests;

/// <summary>⊕ is a commutative monoid with identity (−∞, 0, 0), associative within float32 rounding.</summary>
public class MergeLawTests
{
    private sealed record Partial(float M, float L, float[] O);

    private static Partial Random(Random rng, int dv)
    {
        float m = (float)((rng.NextDouble() * 40) - 20);
        float l = (float)(1 + (rng.NextDouble() * 50));
        var o = Enumerable.Range(0, dv).Select(_ => TestData.Gaussian(rng) * l).ToArray();
        return new Partial(m, l, o);
    }

    private static Partial Merge(Partial a, Partial b)
    {
        float m = a.M, l = a.L;
        var o = (float[])a.O.Clone();
        PartialMath.MergeInto(ref m, ref l, o, b.M, b.L, b.O);
        return new Partial(m, l, o);
    }

    private static double[] Final(Partial p) => p.O.Select(x => (double)x / p.L).Append(p.M + Math.Log(p.L)).ToArray();

    /// <summary>The exact float64 merge of float32 partials, for comparing with.</summary>
    private static double[] Exact(params Partial[] parts)
    {
        double m = parts.Max(p => (double)p.M);
        double l = parts.Sum(p => Math.Exp(p.M - m) * p.L);
        return Enumerable.Range(0, parts[0].O.Length).Select(c => parts.Sum(p => Math.Exp(p.M - m) * p.O[c]) / l).Append(m + Math.Log(l)).ToArray();
    }

    [Fact]
    public void Identity_leaves_a_partial_unchanged_bit_for_bit()
    {
        var rng = new Random(1);
        var identity = new Partial(float.NegativeInfinity, 0, new float[19]);
        for (int t = 0; t < 100; t++)
        {
            var x = Random(rng, 19);
            foreach (var merged in new[] { Merge(x, identity), Merge(identity, x) })
            {
                Assert.Equal(x.M, merged.M);
                Assert.Equal(x.L, merged.L);
                TestData.AssertBitwise(x.O, merged.O, "x ⊕ identity");
            }
        }

        var both = Merge(identity, identity);
        Assert.True(float.IsNegativeInfinity(both.M) && both.L == 0, "identity ⊕ identity must stay the identity");
    }

    [Fact]
    public void Merge_is_commutative_bit_for_bit_and_associative_within_the_contract()
    {
        var rng = new Random(2);
        for (int t = 0; t < 500; t++)
        {
            var a = Random(rng, 33);
            var b = Random(rng, 33);
            var c = Random(rng, 33);
            var ab = Merge(a, b);
            var ba = Merge(b, a);
            Assert.Equal(ab.M, ba.M);
            Assert.Equal(ab.L, ba.L);
            TestData.AssertBitwise(ab.O, ba.O, "a ⊕ b vs b ⊕ a");

            var exact = Exact(a, b, c);
            TestData.AssertClose(Final(Merge(Merge(a, b), c)).Select(x => (float)x).ToArray(), exact, "(a ⊕ b) ⊕ c");
            TestData.AssertClose(Final(Merge(a, Merge(b, c))).Select(x => (float)x).ToArray(), exact, "a ⊕ (b ⊕ c)");
        }
    }

    [Fact]
    public void Merging_partials_with_logits_1e4_apart_neither_overflows_nor_makes_nan()
    {
        var a = new Partial(1e4f, 1f, [1f, -2f]);
        var b = new Partial(-1e4f, 3f, [5f, 5f]);
        var ab = Merge(a, b);
        Assert.Equal(1e4f, ab.M);
        Assert.Equal(1f, ab.L);
        Assert.Equal([1f, -2f], ab.O);
    }
}
