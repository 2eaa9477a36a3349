using System.Runtime.Intrinsics;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tests;

public class VectorMathTests
{
    private static IEnumerable<float> Sweep(float lo, float hi, int count)
        => Enumerable.Range(0, count).Select(i => lo + ((hi - lo) * i / (count - 1)));

    [Fact]
    public void Exp_is_within_2_ulp_and_exact_at_0_and_negative_infinity()
    {
        Assert.Equal(1f, VectorMath.Exp(0f));
        Assert.Equal(0f, VectorMath.Exp(float.NegativeInfinity));
        Assert.Equal(0f, VectorMath.Exp(-1e4f));
        double worst = 0;
        float at = 0;
        foreach (float x in Sweep(-87f, 0f, 200_001).Concat(Sweep(-1f, 1f, 100_001)))
        {
            double exact = Math.Exp(x);
            double ulps = Math.Abs(VectorMath.Exp(x) - exact) / (MathF.BitIncrement((float)exact) - (float)exact);
            if (ulps > worst)
            {
                worst = ulps;
                at = x;
            }
        }

        Assert.True(worst <= 2, $"exp worst error {worst:F2} ulp at x = {at:R}");
    }

    [Fact]
    public void Tanh_is_within_3e_7_relative_and_odd()
    {
        double worst = 0;
        float at = 0;
        foreach (float x in Sweep(-12f, 12f, 400_001))
        {
            double exact = Math.Tanh(x);
            double err = Math.Abs(VectorMath.Tanh(x) - exact) / Math.Max(Math.Abs(exact), 1e-30);
            if (err > worst)
            {
                worst = err;
                at = x;
            }

            Assert.Equal(-VectorMath.Tanh(x), VectorMath.Tanh(-x));
        }

        Assert.True(worst <= 3e-7, $"tanh worst relative error {worst:G3} at x = {at:R}");
    }

    [Fact]
    public void Vector_exp_matches_scalar_exp_bit_for_bit()
    {
        var xs = Sweep(-90f, 1f, 4096).ToArray();
        for (int i = 0; i < xs.Length; i += 16)
        {
            var v512 = VectorMath.Exp<Lanes512, Vector512<float>>(Vector512.Create(xs.AsSpan(i, 16)));
            var v256 = VectorMath.Tanh<Lanes256, Vector256<float>>(Vector256.Create(xs.AsSpan(i, 8)));
            for (int j = 0; j < 16; j++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(VectorMath.Exp(xs[i + j])), BitConverter.SingleToInt32Bits(v512[j]));
            }

            for (int j = 0; j < 8; j++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(VectorMath.Tanh(xs[i + j])), BitConverter.SingleToInt32Bits(v256[j]));
            }
        }
    }
}
