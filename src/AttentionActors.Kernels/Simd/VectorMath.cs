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
        => Exp<TL, TV>(x, ExpConstants<TL, TV>.Create());

    /// <summary>
    /// <see cref="Exp{TL, TV}(TV)"/> with its constants splatted once by the caller: a loop of
    /// exponentials keeps them in registers instead of reloading thirteen of them every time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<TL, TV>(TV x, in ExpConstants<TL, TV> k)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        var n = TL.Subtract(TL.Fma(x, k.Log2E, k.Shift), k.Shift);
        var r = TL.Fma(n, k.MinusLn2Hi, x);
        r = TL.Fma(n, k.MinusLn2Lo, r);
        var z = TL.Multiply(r, r);

        // p(r) = c0 + c1·r + … + c5·r^5 = (c0 + c1·r) + z·((c2 + c3·r) + z·(c4 + c5·r)).
        var p01 = TL.Fma(k.C1, r, k.C0);
        var p23 = TL.Fma(k.C3, r, k.C2);
        var p45 = TL.Fma(k.C5, r, k.C4);
        var p = TL.Fma(TL.Fma(p45, z, p23), z, p01);

        // e^r ≈ 1 + r + r²·p(r)
        var er = TL.Add(TL.Fma(p, z, r), k.One);
        var result = TL.ScaleByPowerOfTwo(er, n);
        return TL.SelectWhereLess(x, k.Underflow, k.Zero, result);
    }

    /// <summary>The splatted constants of <see cref="Exp{TL, TV}(TV, in ExpConstants{TL, TV})"/>.</summary>
    internal readonly struct ExpConstants<TL, TV>
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        public readonly TV Log2E, Shift, MinusLn2Hi, MinusLn2Lo, C0, C1, C2, C3, C4, C5, One, Underflow, Zero;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private ExpConstants(bool _)
        {
            Log2E = TL.Splat(VectorMath.Log2E);
            Shift = TL.Splat(RoundingShift);
            MinusLn2Hi = TL.Splat(-Ln2Hi);
            MinusLn2Lo = TL.Splat(-Ln2Lo);
            C0 = TL.Splat(5.0000001201e-1f);
            C1 = TL.Splat(1.6666665459e-1f);
            C2 = TL.Splat(4.1665795894e-2f);
            C3 = TL.Splat(8.3334519073e-3f);
            C4 = TL.Splat(1.3981999507e-3f);
            C5 = TL.Splat(1.9875691500e-4f);
            One = TL.Splat(1f);
            Underflow = TL.Splat(ExpUnderflow);
            Zero = TL.Splat(0f);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ExpConstants<TL, TV> Create() => new(true);
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
