using System.Runtime.CompilerServices;

namespace AttentionActors.Kernels.Simd;

/// <summary>
/// exp and tanh built only from lane operations that round identically at every width, so
/// <c>Exp(x)</c> has the same bits whether one lane or sixteen compute it. Accuracy ≈ 1–2 ulp.
/// </summary>
internal static class VectorMath
{
    // Cephes expf: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial, result r-poly · 2^n.
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;

    /// <summary>Below this, e^x is flushed to 0 (it would be subnormal); −∞ maps to 0.</summary>
    public const float ExpUnderflow = -87.33654f;

    /// <summary>Effectively computes <c>e^x</c> for x ≤ 88; exactly 1 at 0, exactly 0 at −∞.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<TL, TV>(TV x)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        var floor = TL.Splat(ExpUnderflow);
        var xc = TL.Max(x, floor);
        var n = TL.Floor(TL.Add(TL.Multiply(xc, TL.Splat(Log2E)), TL.Splat(0.5f)));
        var r = TL.Fma(n, TL.Splat(-Ln2Hi), xc);
        r = TL.Fma(n, TL.Splat(-Ln2Lo), r);
        var z = TL.Multiply(r, r);
        var p = TL.Fma(TL.Splat(1.9875691500e-4f), r, TL.Splat(1.3981999507e-3f));
        p = TL.Fma(p, r, TL.Splat(8.3334519073e-3f));
        p = TL.Fma(p, r, TL.Splat(4.1665795894e-2f));
        p = TL.Fma(p, r, TL.Splat(1.6666665459e-1f));
        p = TL.Fma(p, r, TL.Splat(5.0000001201e-1f));
        // e^r ≈ 1 + r + r²·p(r)
        var er = TL.Add(TL.Fma(p, z, r), TL.Splat(1f));
        var result = TL.ScaleByPowerOfTwo(er, n);
        return TL.SelectWhereLess(x, floor, TL.Splat(0f), result);
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
