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

    /// <summary>Exp has no clamp in front: below the underflow threshold the select alone must give +0, at every width.</summary>
    [Fact]
    public void Exp_below_the_underflow_threshold_is_zero_at_every_width()
    {
        float[] xs = [MathF.BitDecrement(VectorMath.ExpUnderflow), -88f, -150f, -1e6f, -3e37f, -float.MaxValue, float.NegativeInfinity, -1e30f];
        var wide = new float[16];
        xs.CopyTo(wide, 0);
        xs.CopyTo(wide, 8);
        var v512 = VectorMath.Exp<Lanes512, Vector512<float>>(Vector512.Create(wide));
        var v256 = VectorMath.Exp<Lanes256, Vector256<float>>(Vector256.Create(xs));
        var v128 = VectorMath.Exp<Lanes128, Vector128<float>>(Vector128.Create(xs.AsSpan(4, 4)));
        for (int j = 0; j < xs.Length; j++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(VectorMath.Exp(xs[j])) == 0, $"scalar exp({xs[j]:R}) = {VectorMath.Exp(xs[j]):R}");
            Assert.True(BitConverter.SingleToInt32Bits(v512[j]) == 0, $"512-bit exp({xs[j]:R}) = {v512[j]:R}");
            Assert.True(BitConverter.SingleToInt32Bits(v256[j]) == 0, $"256-bit exp({xs[j]:R}) = {v256[j]:R}");
        }

        for (int j = 0; j < 4; j++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(v128[j]) == 0, $"128-bit exp({xs[4 + j]:R}) = {v128[j]:R}");
        }

        Assert.True(VectorMath.Exp(VectorMath.ExpUnderflow) > 0f);
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

    /// <summary>
    /// Every 331st float in [−90, 88] (about 6.8 million, subnormal results included): the widest
    /// lanes, which scale by 2^n with one vscalefps where AVX-512 has it, give the scalar bits.
    /// </summary>
    [Fact]
    public void Widest_exp_matches_scalar_exp_over_a_sweep_of_bit_patterns()
    {
        var xs = new float[16];
        int filled = 0, checkedCount = 0;
        void Check()
        {
            var v = VectorMath.Exp<Lanes512, Vector512<float>>(Vector512.Create(xs));
            for (int j = 0; j < filled; j++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(VectorMath.Exp(xs[j])) == BitConverter.SingleToInt32Bits(v[j]), $"exp({xs[j]:R}): scalar {VectorMath.Exp(xs[j]):R}, 512-bit {v[j]:R}");
            }

            checkedCount += filled;
            filled = 0;
        }

        // Bit patterns of non-negative floats ascend with their values; negative ones are the same patterns with the sign bit.
        foreach (var (limit, sign) in new[] { (88f, 0), (90f, int.MinValue) })
        {
            for (int bits = 0; bits <= BitConverter.SingleToInt32Bits(limit); bits += 331)
            {
                xs[filled++] = BitConverter.Int32BitsToSingle(bits | sign);
                if (filled == 16)
                {
                    Check();
                }
            }
        }

        Check();
        Assert.True(checkedCount > 6_000_000, $"only {checkedCount} values checked");
    }
}
