namespace AttentionActors.Kernels.Simd;

/// <summary>
/// One SIMD width seen through a common set of operations, so a tile kernel is written once and
/// specialised by the JIT for <c>Vector512</c>, <c>Vector256</c>, <c>Vector128</c> and plain floats.
/// Every operation is element-wise and exactly rounded the same way at every width (FMA is fused
/// everywhere), which is what makes the kernels produce identical bits at every width.
/// </summary>
internal interface ILanes<TV>
    where TV : unmanaged
{
    /// <summary>Number of float32 lanes in <typeparamref name="TV"/>.</summary>
    static abstract int Count { get; }

    static abstract TV Load(ref float source, nint offset);

    static abstract void Store(TV value, ref float destination, nint offset);

    static abstract TV Splat(float value);

    /// <summary>Lanes 0, 1, …, Count − 1.</summary>
    static abstract TV Iota { get; }

    /// <summary>Effectively computes <c>a · b + c</c> with a single rounding.</summary>
    static abstract TV Fma(TV a, TV b, TV c);

    static abstract TV Add(TV a, TV b);

    static abstract TV Subtract(TV a, TV b);

    static abstract TV Multiply(TV a, TV b);

    static abstract TV Divide(TV a, TV b);

    /// <summary>Maximum for inputs that are never NaN (the kernels validate that first).</summary>
    static abstract TV Max(TV a, TV b);

    static abstract TV Min(TV a, TV b);

    static abstract TV Abs(TV a);

    static abstract TV Floor(TV a);

    /// <summary><c>x · 2^n</c> for integral <paramref name="n"/> in [−126, 127].</summary>
    static abstract TV ScaleByPowerOfTwo(TV x, TV n);

    /// <summary>Per lane: <c>x &lt; threshold ? whenLess : otherwise</c>.</summary>
    static abstract TV SelectWhereLess(TV x, TV threshold, TV whenLess, TV otherwise);

    /// <summary>Copies the sign bit of <paramref name="sign"/> onto the non-negative <paramref name="magnitude"/>.</summary>
    static abstract TV WithSignOf(TV magnitude, TV sign);

    /// <summary>The largest lane, for lanes that are never NaN; a zero maximum may come back as −0 or +0.</summary>
    static abstract float MaxAcross(TV value);

    static abstract void StoreLanes(TV value, Span<float> destination);
}
