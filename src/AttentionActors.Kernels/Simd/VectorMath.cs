using System.Runtime.CompilerServices;

namespace AttentionActors.Kernels.Simd;

/// <summary>
/// exp and tanh built only from lane operations that round identically at every width, so
/// <c>Exp(x)</c> has the same bits whether one lane or sixteen compute it. Accuracy ≈ 1–2 ulp.
/// </summary>
internal static class VectorMath
{
    // Cephes expf's reduction and polynomial: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6
    // polynomial, result r-poly · 2^n.
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;

    /// <summary>1.5·2^23: adding it to a float of magnitude below 2^22 rounds it to an integer (ties to even).</summary>
    private const float RoundingShift = 12582912f;

    /// <summary>Below this, e^x is flushed to 0 (it would be subnormal); −∞ maps to 0.</summary>
    public const float ExpUnderflow = -87.33654f;

    /// <summary>Effectively computes <c>e^x</c> for x ≤ 88; exactly 1 at 0, exactly 0 at −∞.</summary>
    /// <remarks>
    /// Written for a short dependency chain, since the softmax runs many of these at once and waits
    /// on their latency: n = round(x·log2e) by one fused multiply-add and one subtraction (no
    /// floor), p(r) by Estrin's scheme (three independent pairs, then two steps in r²) instead of
    /// Horner's five dependent steps, and no clamp in front: for x below the underflow threshold
    /// (−∞ included) the intermediate values may be anything, the final select discards them.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<TL, TV>(TV x)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        var shift = TL.Splat(RoundingShift);
        var n = TL.Subtract(TL.Fma(x, TL.Splat(Log2E), shift), shift);
        var r = TL.Fma(n, TL.Splat(-Ln2Hi), x);
        r = TL.Fma(n, TL.Splat(-Ln2Lo), r);
        var z = TL.Multiply(r, r);

        // p(r) = c0 + c1·r + … + c5·r^5 = (c0 + c1·r) + z·((c2 + c3·r) + z·(c4 + c5·r)).
        var p01 = TL.Fma(TL.Splat(1.6666665459e-1f), r, TL.Splat(5.0000001201e-1f));
        var p23 = TL.Fma(TL.Splat(8.3334519073e-3f), r, TL.Splat(4.1665795894e-2f));
        var p45 = TL.Fma(TL.Splat(1.9875691500e-4f), r, TL.Splat(1.3981999507e-3f));
        var p = TL.Fma(TL.Fma(p45, z, p23), z, p01);

        // e^r ≈ 1 + r + r²·p(r)
        var er = TL.Add(TL.Fma(p, z, r), TL.Splat(1f));
        var result = TL.ScaleByPowerOfTwo(er, n);
        return TL.SelectWhereLess(x, TL.Splat(ExpUnderflow), TL.Splat(0f), result);
    }

    /// <summary>Effectively computes <c>tanh(x)</c> for finite x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Tanh<TL, TV>(TV x)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        // |x| < 0.625: Cephes odd polynomial, no cancellation near 0.
        var z = TL.Multiply(x, x);
        var p = TL.Fma(TL.Splat(-5.70498872745e-3f), z, TL.Splat(2.06390887954e-2f));
        p = TL.Fma(p, z, TL.Splat(-5.37397155531e-2f));
        p = TL.Fma(p, z, TL.Splat(1.33314422036e-1f));
        p = TL.Fma(p, z, TL.Splat(-3.33332819422e-1f));
        var small = TL.Fma(TL.Multiply(p, z), x, x);

        // |x| ≥ 0.625: tanh|x| = (1 − e)/(1 + e) with e = e^(−2|x|) ≤ 0.29, so no cancellation.
        var ax = TL.Abs(x);
        var e = Exp<TL, TV>(TL.Multiply(ax, TL.Splat(-2f)));
        var one = TL.Splat(1f);
        var large = TL.WithSignOf(TL.Divide(TL.Subtract(one, e), TL.Add(one, e)), x);
        return TL.SelectWhereLess(ax, TL.Splat(0.625f), small, large);
    }

    /// <summary>Scalar <c>e^x</c> with the same bits as every vector width.</summary>
    public static float Exp(float x) => Exp<LanesScalar, float>(x);

    /// <summary>Scalar <c>tanh(x)</c> with the same bits as every vector width.</summary>
    public static float Tanh(float x) => Tanh<LanesScalar, float>(x);
}
