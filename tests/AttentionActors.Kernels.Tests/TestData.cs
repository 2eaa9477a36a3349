using AttentionActors.Kernels.Reference;

namespace AttentionActors.Kernels.Tests;

/// <summary>Seeded random tensors and comparisons that report the worst element.</summary>
internal static class TestData
{
    public static AttentionTensor Normal(string name, int seed, int b, int h, int n, int d, float std = 1f)
    {
        var rng = new Random(seed);
        var data = new float[b * h * n * d];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = std * Gaussian(rng);
        }

        return AttentionTensor.FromArray(name, data, b, h, n, d);
    }

    /// <summary><paramref name="count"/> seeded values uniform in [−0.5, 0.5) (small weights, e.g. additive scores').</summary>
    public static float[] Uniform(int count, int seed)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2) - 1) * 0.5f)];
    }

    public static float Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble();
        double u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>A copy of <paramref name="whole"/> held in segments of <paramref name="planesPerSegment"/> (batch, head) planes, as a file too large for one buffer is.</summary>
    public static AttentionTensor Segment(AttentionTensor whole, int planesPerSegment)
    {
        long plane = (long)whole.Seq * whole.Dim, planes = (long)whole.Batch * whole.Heads;
        var segments = new List<Memory<float>>();
        for (long p = 0; p < planes; p += planesPerSegment)
        {
            long n = Math.Min(planesPerSegment, planes - p) * plane;
            segments.Add(whole.Data.Slice((int)(p * plane), (int)n).ToArray());
        }

        return AttentionTensor.Segmented(whole.Name, segments, whole.Batch, whole.Heads, whole.Seq, whole.Dim);
    }

    /// <summary>The tensors of <paramref name="parts"/> (same batch, heads and width) one after another along the sequence: a cache's appends as one K or V.</summary>
    public static AttentionTensor ConcatSeq(IReadOnlyList<AttentionTensor> parts)
    {
        var first = parts[0];
        int seq = parts.Sum(p => p.Seq);
        var data = new float[first.Batch * first.Heads * seq * first.Dim];
        int at = 0;
        for (int b = 0; b < first.Batch; b++)
        {
            for (int h = 0; h < first.Heads; h++)
            {
                foreach (var part in parts)
                {
                    var rows = part.Data.Span.Slice((int)part.RowOffset(b, h, 0), part.Seq * part.Dim);
                    rows.CopyTo(data.AsSpan(at));
                    at += rows.Length;
                }
            }
        }

        return AttentionTensor.FromArray(first.Name, data, first.Batch, first.Heads, seq, first.Dim);
    }

    public static (AttentionTensor Q, AttentionTensor K, AttentionTensor V) Qkv(int seed, int b, int h, int hk, int nq, int nk, int dk, int dv)
        => (Normal("Q", seed, b, h, nq, dk), Normal("K", seed + 1, b, hk, nk, dk), Normal("V", seed + 2, b, hk, nk, dv));

    /// <summary>
    /// Asserts the accuracy contract |out − ref| ≤ 2e-6 + 1e-5·|ref| elementwise (and for lse),
    /// and that nothing is NaN or infinite except an lse of −∞ where the reference has one.
    /// </summary>
    public static void AssertWithinContract(AttentionResult actual, ReferenceResult expected, string context)
    {
        AssertClose(actual.Output.Data.Span, expected.Output, $"{context}: out");
        AssertClose(actual.Lse, expected.Lse, $"{context}: lse");
    }

    public static void AssertClose(ReadOnlySpan<float> actual, double[] expected, string context)
    {
        Assert.True(actual.Length == expected.Length, $"{context}: {actual.Length} elements, reference has {expected.Length}");
        double worstExcess = double.NegativeInfinity;
        int worst = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            double r = expected[i];
            double a = actual[i];
            if (double.IsNegativeInfinity(r))
            {
                Assert.True(float.IsNegativeInfinity(actual[i]), $"{context}[{i}] = {a:R}, reference −∞");
                continue;
            }

            Assert.True(float.IsFinite(actual[i]), $"{context}[{i}] = {a:R} is not finite (reference {r:R})");
            double excess = Math.Abs(a - r) - (2e-6 + (1e-5 * Math.Abs(r)));
            if (excess > worstExcess)
            {
                worstExcess = excess;
                worst = i;
            }
        }

        if (worst >= 0)
        {
            Assert.True(worstExcess <= 0, $"{context}: worst element {worst}: {actual[worst]:R} vs reference {expected[worst]:R}, |diff| = {Math.Abs(actual[worst] - expected[worst]):G3} exceeds 2e-6 + 1e-5·|ref| by {worstExcess:G3}");
        }
    }

    /// <summary>Asserts two partial sets hold the same tree nodes and the same bits of m, l and o.</summary>
    public static void AssertSamePartials(Partials.PartialSet expected, Partials.PartialSet actual, string context)
    {
        Assert.Equal(expected.Nodes, actual.Nodes);
        AssertBitwise(expected.M, actual.M, $"{context}: m");
        AssertBitwise(expected.L, actual.L, $"{context}: l");
        AssertBitwise(expected.O, actual.O, $"{context}: o");
    }

    /// <summary>Asserts bit-for-bit equality, naming the first differing element.</summary>
    public static void AssertBitwise(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string context)
    {
        Assert.True(expected.Length == actual.Length, $"{context}: lengths {expected.Length} and {actual.Length}");
        int differing = 0;
        int first = -1;
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
            {
                differing++;
                first = first < 0 ? i : first;
                worst = Math.Max(worst, Math.Abs((double)expected[i] - actual[i]));
            }
        }

        Assert.True(differing == 0, $"{context}: {differing} of {expected.Length} elements differ in bits; first at {first}: {(first >= 0 ? expected[first] : 0):R} vs {(first >= 0 ? actual[first] : 0):R}; worst |diff| {worst:G3}");
    }
}
