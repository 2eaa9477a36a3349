using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tiles;

/// <summary>Marks the dot-product inner step <c>acc += q·k</c>.</summary>
internal readonly struct DotStep;

/// <summary>Marks the squared-distance inner step <c>acc += (q − k)²</c>.</summary>
internal readonly struct DistanceStep;

/// <summary>Marks a 6×4 or 4×4 tile that asks no lines ahead (the code is that of a tile without the option).</summary>
internal readonly struct NoLinesAhead;

/// <summary>Marks a 6×4 tile that asks a line ahead into L2 every second step, or a 4×4 tile every step.</summary>
internal readonly struct LinesAhead;

/// <summary>
/// Register-blocked tile kernels for one SIMD width (W = TL.Count lanes).
/// <code>
/// Q: [rows, depth] row-major (stride qStride)      Kt: [depth, Bp] (keys transposed, zero padded)
/// S: [rows, Bp]    S[i, j] = Σ_k step(Q[i, k], Kt[k, j]), k ascending
/// P: [rows, Bp]    V: [n, Dv] (stride vStride)      O: [rows, Dv]  O[i, c] = Σ_j P[i, j]·V[j, c], j ascending
/// </code>
/// Each output element is one fused multiply-add chain in a fixed order, so a 4×4 tile, a single
/// vector and a scalar tail all give it the same bits.
/// </summary>
internal static class TileKernels<TL, TV>
    where TL : ILanes<TV>
    where TV : unmanaged
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Step<TS>(TV q, TV k, TV acc)
        where TS : struct
    {
        if (typeof(TS) == typeof(DistanceStep))
        {
            var d = TL.Subtract(q, k);
            return TL.Fma(d, d, acc);
        }

        return TL.Fma(q, k, acc);
    }

    /// <summary>
    /// S[0..4, 0..4W) for four query rows and 4W keys. With <typeparamref name="TA"/>
    /// <see cref="LinesAhead"/> it also asks <paramref name="depth"/> lines from
    /// <paramref name="ahead"/> on into L2, one per step (see <see cref="Score6x4"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Score4x4<TS, TA>(ref float q, nint qStride, int depth, ref float kt, nint ktStride, ref float s, nint sStride, nint ahead)
        where TS : struct
        where TA : struct
    {
        nint w = TL.Count;
        ref float q1 = ref Unsafe.Add(ref q, qStride);
        ref float q2 = ref Unsafe.Add(ref q1, qStride);
        ref float q3 = ref Unsafe.Add(ref q2, qStride);
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        nint line = ahead;
        ref float kr = ref kt;
        for (nint k = 0; k < depth; k++)
        {
            AskLine<TA>(line);
            line += AheadBytesPerStep4;
            var k0 = TL.Load(ref kr, 0);
            var k1 = TL.Load(ref kr, w);
            var k2 = TL.Load(ref kr, 2 * w);
            var k3 = TL.Load(ref kr, 3 * w);
            kr = ref Unsafe.Add(ref kr, ktStride);

            var b = TL.Splat(Unsafe.Add(ref q, k));
            a00 = Step<TS>(b, k0, a00);
            a01 = Step<TS>(b, k1, a01);
            a02 = Step<TS>(b, k2, a02);
            a03 = Step<TS>(b, k3, a03);
            b = TL.Splat(Unsafe.Add(ref q1, k));
            a10 = Step<TS>(b, k0, a10);
            a11 = Step<TS>(b, k1, a11);
            a12 = Step<TS>(b, k2, a12);
            a13 = Step<TS>(b, k3, a13);
            b = TL.Splat(Unsafe.Add(ref q2, k));
            a20 = Step<TS>(b, k0, a20);
            a21 = Step<TS>(b, k1, a21);
            a22 = Step<TS>(b, k2, a22);
            a23 = Step<TS>(b, k3, a23);
            b = TL.Splat(Unsafe.Add(ref q3, k));
            a30 = Step<TS>(b, k0, a30);
            a31 = Step<TS>(b, k1, a31);
            a32 = Step<TS>(b, k2, a32);
            a33 = Step<TS>(b, k3, a33);
        }

        Store4(ref s, 0, w, a00, a01, a02, a03);
        Store4(ref s, sStride, w, a10, a11, a12, a13);
        Store4(ref s, 2 * sStride, w, a20, a21, a22, a23);
        Store4(ref s, 3 * sStride, w, a30, a31, a32, a33);
    }

    /// <summary>
    /// S[0..8, 0..2W) for eight query rows and 2W keys: each key vector loaded is used eight times,
    /// half the loads per FMA of the 4×4 tile (for CPUs with 32 vector registers: 16 accumulators).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Score8x2<TS>(ref float q, nint qStride, int depth, ref float kt, nint ktStride, ref float s, nint sStride)
        where TS : struct
    {
        nint w = TL.Count;
        ref float q1 = ref Unsafe.Add(ref q, qStride);
        ref float q2 = ref Unsafe.Add(ref q1, qStride);
        ref float q3 = ref Unsafe.Add(ref q2, qStride);
        ref float q4 = ref Unsafe.Add(ref q3, qStride);
        ref float q5 = ref Unsafe.Add(ref q4, qStride);
        ref float q6 = ref Unsafe.Add(ref q5, qStride);
        ref float q7 = ref Unsafe.Add(ref q6, qStride);
        TV a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        TV a40 = default, a41 = default, a50 = default, a51 = default, a60 = default, a61 = default, a70 = default, a71 = default;
        ref float kr = ref kt;
        for (nint k = 0; k < depth; k++)
        {
            var k0 = TL.Load(ref kr, 0);
            var k1 = TL.Load(ref kr, w);
            kr = ref Unsafe.Add(ref kr, ktStride);
            var b = TL.Splat(Unsafe.Add(ref q, k));
            a00 = Step<TS>(b, k0, a00);
            a01 = Step<TS>(b, k1, a01);
            b = TL.Splat(Unsafe.Add(ref q1, k));
            a10 = Step<TS>(b, k0, a10);
            a11 = Step<TS>(b, k1, a11);
            b = TL.Splat(Unsafe.Add(ref q2, k));
            a20 = Step<TS>(b, k0, a20);
            a21 = Step<TS>(b, k1, a21);
            b = TL.Splat(Unsafe.Add(ref q3, k));
            a30 = Step<TS>(b, k0, a30);
            a31 = Step<TS>(b, k1, a31);
            b = TL.Splat(Unsafe.Add(ref q4, k));
            a40 = Step<TS>(b, k0, a40);
            a41 = Step<TS>(b, k1, a41);
            b = TL.Splat(Unsafe.Add(ref q5, k));
            a50 = Step<TS>(b, k0, a50);
            a51 = Step<TS>(b, k1, a51);
            b = TL.Splat(Unsafe.Add(ref q6, k));
            a60 = Step<TS>(b, k0, a60);
            a61 = Step<TS>(b, k1, a61);
            b = TL.Splat(Unsafe.Add(ref q7, k));
            a70 = Step<TS>(b, k0, a70);
            a71 = Step<TS>(b, k1, a71);
        }

        Store2(ref s, 0, w, a00, a01);
        Store2(ref s, sStride, w, a10, a11);
        Store2(ref s, 2 * sStride, w, a20, a21);
        Store2(ref s, 3 * sStride, w, a30, a31);
        Store2(ref s, 4 * sStride, w, a40, a41);
        Store2(ref s, 5 * sStride, w, a50, a51);
        Store2(ref s, 6 * sStride, w, a60, a61);
        Store2(ref s, 7 * sStride, w, a70, a71);
    }

    /// <summary>Bytes the 6×4 tiles' look-ahead advances per step: one 64-byte line every second step.</summary>
    public const int AheadBytesPerStep = 32;

    /// <summary>
    /// Bytes the 4×4 tiles' look-ahead advances per step: a line every step. A decoding step of one
    /// row per query head (four heads a group) has only 4×4 tiles, one per chunk of 64 keys or value
    /// columns: at d = 128 they ask a quarter of the next block's lines this way (an eighth at a line
    /// every second step) and leave the rest to the bursts after each call. Two or three lines a step
    /// measured the same as one.
    /// </summary>
    public const int AheadBytesPerStep4 = 64;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void AskLine<TA>(nint at)
        where TA : struct
    {
        // Folded when the JIT specialises TA: with NoLinesAhead the loop holds no trace of it.
        if (typeof(TA) == typeof(LinesAhead) && System.Runtime.Intrinsics.X86.Sse.IsSupported)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch1((void*)at);
        }
    }

    /// <summary>
    /// S[0..6, 0..4W) for six query rows and 4W keys: 24 accumulators, 4 key vectors and one broadcast
    /// live (29 of 32 vector registers); 10 loads per 24 FMAs against the 8×2 tile's 10 per 16.
    /// With <typeparamref name="TA"/> <see cref="LinesAhead"/> it also asks depth / 2 lines from
    /// <paramref name="ahead"/> on into L2, spread over its steps (a hint: it never faults and changes
    /// no value).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Score6x4<TS, TA>(ref float q, nint qStride, int depth, ref float kt, nint ktStride, ref float s, nint sStride, nint ahead)
        where TS : struct
        where TA : struct
    {
        nint w = TL.Count;
        ref float q1 = ref Unsafe.Add(ref q, qStride);
        ref float q2 = ref Unsafe.Add(ref q1, qStride);
        ref float q3 = ref Unsafe.Add(ref q2, qStride);
        ref float q4 = ref Unsafe.Add(ref q3, qStride);
        ref float q5 = ref Unsafe.Add(ref q4, qStride);
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        TV a40 = default, a41 = default, a42 = default, a43 = default;
        TV a50 = default, a51 = default, a52 = default, a53 = default;
        nint line = ahead;
        ref float kr = ref kt;
        for (nint k = 0; k < depth; k++)
        {
            AskLine<TA>(line);
            line += AheadBytesPerStep;
            var k0 = TL.Load(ref kr, 0);
            var k1 = TL.Load(ref kr, w);
            var k2 = TL.Load(ref kr, 2 * w);
            var k3 = TL.Load(ref kr, 3 * w);
            kr = ref Unsafe.Add(ref kr, ktStride);

            var b = TL.Splat(Unsafe.Add(ref q, k));
            a00 = Step<TS>(b, k0, a00);
            a01 = Step<TS>(b, k1, a01);
            a02 = Step<TS>(b, k2, a02);
            a03 = Step<TS>(b, k3, a03);
            b = TL.Splat(Unsafe.Add(ref q1, k));
            a10 = Step<TS>(b, k0, a10);
            a11 = Step<TS>(b, k1, a11);
            a12 = Step<TS>(b, k2, a12);
            a13 = Step<TS>(b, k3, a13);
            b = TL.Splat(Unsafe.Add(ref q2, k));
            a20 = Step<TS>(b, k0, a20);
            a21 = Step<TS>(b, k1, a21);
            a22 = Step<TS>(b, k2, a22);
            a23 = Step<TS>(b, k3, a23);
            b = TL.Splat(Unsafe.Add(ref q3, k));
            a30 = Step<TS>(b, k0, a30);
            a31 = Step<TS>(b, k1, a31);
            a32 = Step<TS>(b, k2, a32);
            a33 = Step<TS>(b, k3, a33);
            b = TL.Splat(Unsafe.Add(ref q4, k));
            a40 = Step<TS>(b, k0, a40);
            a41 = Step<TS>(b, k1, a41);
            a42 = Step<TS>(b, k2, a42);
            a43 = Step<TS>(b, k3, a43);
            b = TL.Splat(Unsafe.Add(ref q5, k));
            a50 = Step<TS>(b, k0, a50);
            a51 = Step<TS>(b, k1, a51);
            a52 = Step<TS>(b, k2, a52);
            a53 = Step<TS>(b, k3, a53);
        }

        Store4(ref s, 0, w, a00, a01, a02, a03);
        Store4(ref s, sStride, w, a10, a11, a12, a13);
        Store4(ref s, 2 * sStride, w, a20, a21, a22, a23);
        Store4(ref s, 3 * sStride, w, a30, a31, a32, a33);
        Store4(ref s, 4 * sStride, w, a40, a41, a42, a43);
        Store4(ref s, 5 * sStride, w, a50, a51, a52, a53);
    }

    /// <summary>S[0..4, 0..2W) for four query rows and 2W keys: the tile for CPUs with 16 vector registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Score4x2<TS>(ref float q, nint qStride, int depth, ref float kt, nint ktStride, ref float s, nint sStride)
        where TS : struct
    {
        nint w = TL.Count;
        ref float q1 = ref Unsafe.Add(ref q, qStride);
        ref float q2 = ref Unsafe.Add(ref q1, qStride);
        ref float q3 = ref Unsafe.Add(ref q2, qStride);
        TV a00 = default, a01 = default, a10 = default, a11 = default;
        TV a20 = default, a21 = default, a30 = default, a31 = default;
        ref float kr = ref kt;
        for (nint k = 0; k < depth; k++)
        {
            var k0 = TL.Load(ref kr, 0);
            var k1 = TL.Load(ref kr, w);
            kr = ref Unsafe.Add(ref kr, ktStride);
            var b = TL.Splat(Unsafe.Add(ref q, k));
            a00 = Step<TS>(b, k0, a00);
            a01 = Step<TS>(b, k1, a01);
            b = TL.Splat(Unsafe.Add(ref q1, k));
            a10 = Step<TS>(b, k0, a10);
            a11 = Step<TS>(b, k1, a11);
            b = TL.Splat(Unsafe.Add(ref q2, k));
            a20 = Step<TS>(b, k0, a20);
            a21 = Step<TS>(b, k1, a21);
            b = TL.Splat(Unsafe.Add(ref q3, k));
            a30 = Step<TS>(b, k0, a30);
            a31 = Step<TS>(b, k1, a31);
        }

        Store2(ref s, 0, w, a00, a01);
        Store2(ref s, sStride, w, a10, a11);
        Store2(ref s, 2 * sStride, w, a20, a21);
        Store2(ref s, 3 * sStride, w, a30, a31);
    }

    /// <summary>S[0..4, 0..W) for four query rows and W keys.</summary>
    public static void Score4x1<TS>(ref float q, nint qStride, int depth, ref float kt, nint ktStride, ref float s, nint sStride)
        where TS : struct
    {
        ref float q1 = ref Unsafe.Add(ref q, qStride);
        ref float q2 = ref Unsafe.Add(ref q1, qStride);
        ref float q3 = ref Unsafe.Add(ref q2, qStride);
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        for (nint k = 0; k < depth; k++)
        {
            var kv = TL.Load(ref kt, k * ktStride);
            a0 = Step<TS>(TL.Splat(Unsafe.Add(ref q, k)), kv, a0);
            a1 = Step<TS>(TL.Splat(Unsafe.Add(ref q1, k)), kv, a1);
            a2 = Step<TS>(TL.Splat(Unsafe.Add(ref q2, k)), kv, a2);
            a3 = Step<TS>(TL.Splat(Unsafe.Add(ref q3, k)), kv, a3);
        }

        TL.Store(a0, ref s, 0);
        TL.Store(a1, ref s, sStride);
        TL.Store(a2, ref s, 2 * sStride);
        TL.Store(a3, ref s, 3 * sStride);
    }

    /// <summary>S[0, 0..W) for one query row and W keys.</summary>
    public static void Score1x1<TS>(ref float q, int depth, ref float kt, nint ktStride, ref float s)
        where TS : struct
    {
        TV acc = default;
        for (nint k = 0; k < depth; k++)
        {
            acc = Step<TS>(TL.Splat(Unsafe.Add(ref q, k)), TL.Load(ref kt, k * ktStride), acc);
        }

        TL.Store(acc, ref s, 0);
    }

    /// <summary>Additive score for one row and W keys: S[j] = Σ_a v_a · tanh(q'_a + k'_a[j]), a ascending.</summary>
    public static void ScoreAdditive1x1(ref float qa, ReadOnlySpan<float> v, ref float kt, nint ktStride, ref float s)
    {
        TV acc = default;
        for (int a = 0; a < v.Length; a++)
        {
            var t = VectorMath.Tanh<TL, TV>(TL.Add(TL.Splat(Unsafe.Add(ref qa, a)), TL.Load(ref kt, a * ktStride)));
            acc = TL.Fma(TL.Splat(v[a]), t, acc);
        }

        TL.Store(acc, ref s, 0);
    }

    /// <summary>
    /// O[0..4, 0..4W) = Σ_{j &lt; n} P[0..4, j] · V[j, 0..4W). With <typeparamref name="TA"/>
    /// <see cref="LinesAhead"/> it also asks <paramref name="n"/> lines from <paramref name="ahead"/>
    /// on into L2, one per step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pv4x4<TA>(ref float p, nint pStride, int n, ref float v, nint vStride, ref float o, nint oStride, nint ahead)
        where TA : struct
    {
        nint w = TL.Count;
        ref float p1 = ref Unsafe.Add(ref p, pStride);
        ref float p2 = ref Unsafe.Add(ref p1, pStride);
        ref float p3 = ref Unsafe.Add(ref p2, pStride);
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        nint line = ahead;
        ref float vr = ref v;
        for (nint j = 0; j < n; j++)
        {
            AskLine<TA>(line);
            line += AheadBytesPerStep4;
            var v0 = TL.Load(ref vr, 0);
            var v1 = TL.Load(ref vr, w);
            var v2 = TL.Load(ref vr, 2 * w);
            var v3 = TL.Load(ref vr, 3 * w);
            vr = ref Unsafe.Add(ref vr, vStride);

            var b = TL.Splat(Unsafe.Add(ref p, j));
            a00 = TL.Fma(b, v0, a00);
            a01 = TL.Fma(b, v1, a01);
            a02 = TL.Fma(b, v2, a02);
            a03 = TL.Fma(b, v3, a03);
            b = TL.Splat(Unsafe.Add(ref p1, j));
            a10 = TL.Fma(b, v0, a10);
            a11 = TL.Fma(b, v1, a11);
            a12 = TL.Fma(b, v2, a12);
            a13 = TL.Fma(b, v3, a13);
            b = TL.Splat(Unsafe.Add(ref p2, j));
            a20 = TL.Fma(b, v0, a20);
            a21 = TL.Fma(b, v1, a21);
            a22 = TL.Fma(b, v2, a22);
            a23 = TL.Fma(b, v3, a23);
            b = TL.Splat(Unsafe.Add(ref p3, j));
            a30 = TL.Fma(b, v0, a30);
            a31 = TL.Fma(b, v1, a31);
            a32 = TL.Fma(b, v2, a32);
            a33 = TL.Fma(b, v3, a33);
        }

        Store4(ref o, 0, w, a00, a01, a02, a03);
        Store4(ref o, oStride, w, a10, a11, a12, a13);
        Store4(ref o, 2 * oStride, w, a20, a21, a22, a23);
        Store4(ref o, 3 * oStride, w, a30, a31, a32, a33);
    }

    /// <summary>O[0..8, 0..2W) = Σ_{j &lt; n} P[0..8, j] · V[j, 0..2W): eight rows share each value vector loaded.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pv8x2(ref float p, nint pStride, int n, ref float v, nint vStride, ref float o, nint oStride)
    {
        nint w = TL.Count;
        ref float p1 = ref Unsafe.Add(ref p, pStride);
        ref float p2 = ref Unsafe.Add(ref p1, pStride);
        ref float p3 = ref Unsafe.Add(ref p2, pStride);
        ref float p4 = ref Unsafe.Add(ref p3, pStride);
        ref float p5 = ref Unsafe.Add(ref p4, pStride);
        ref float p6 = ref Unsafe.Add(ref p5, pStride);
        ref float p7 = ref Unsafe.Add(ref p6, pStride);
        TV a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        TV a40 = default, a41 = default, a50 = default, a51 = default, a60 = default, a61 = default, a70 = default, a71 = default;
        ref float vr = ref v;
        for (nint j = 0; j < n; j++)
        {
            var v0 = TL.Load(ref vr, 0);
            var v1 = TL.Load(ref vr, w);
            vr = ref Unsafe.Add(ref vr, vStride);
            var b = TL.Splat(Unsafe.Add(ref p, j));
            a00 = TL.Fma(b, v0, a00);
            a01 = TL.Fma(b, v1, a01);
            b = TL.Splat(Unsafe.Add(ref p1, j));
            a10 = TL.Fma(b, v0, a10);
            a11 = TL.Fma(b, v1, a11);
            b = TL.Splat(Unsafe.Add(ref p2, j));
            a20 = TL.Fma(b, v0, a20);
            a21 = TL.Fma(b, v1, a21);
            b = TL.Splat(Unsafe.Add(ref p3, j));
            a30 = TL.Fma(b, v0, a30);
            a31 = TL.Fma(b, v1, a31);
            b = TL.Splat(Unsafe.Add(ref p4, j));
            a40 = TL.Fma(b, v0, a40);
            a41 = TL.Fma(b, v1, a41);
            b = TL.Splat(Unsafe.Add(ref p5, j));
            a50 = TL.Fma(b, v0, a50);
            a51 = TL.Fma(b, v1, a51);
            b = TL.Splat(Unsafe.Add(ref p6, j));
            a60 = TL.Fma(b, v0, a60);
            a61 = TL.Fma(b, v1, a61);
            b = TL.Splat(Unsafe.Add(ref p7, j));
            a70 = TL.Fma(b, v0, a70);
            a71 = TL.Fma(b, v1, a71);
        }

        Store2(ref o, 0, w, a00, a01);
        Store2(ref o, oStride, w, a10, a11);
        Store2(ref o, 2 * oStride, w, a20, a21);
        Store2(ref o, 3 * oStride, w, a30, a31);
        Store2(ref o, 4 * oStride, w, a40, a41);
        Store2(ref o, 5 * oStride, w, a50, a51);
        Store2(ref o, 6 * oStride, w, a60, a61);
        Store2(ref o, 7 * oStride, w, a70, a71);
    }

    /// <summary>
    /// O[0..6, 0..4W) = Σ_{j &lt; n} P[0..6, j] · V[j, 0..4W): 24 accumulators, 10 loads per 24 FMAs.
    /// With <typeparamref name="TA"/> <see cref="LinesAhead"/> it also asks n / 2 lines from
    /// <paramref name="ahead"/> on into L2, as <see cref="Score6x4"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pv6x4<TA>(ref float p, nint pStride, int n, ref float v, nint vStride, ref float o, nint oStride, nint ahead)
        where TA : struct
    {
        nint w = TL.Count;
        ref float p1 = ref Unsafe.Add(ref p, pStride);
        ref float p2 = ref Unsafe.Add(ref p1, pStride);
        ref float p3 = ref Unsafe.Add(ref p2, pStride);
        ref float p4 = ref Unsafe.Add(ref p3, pStride);
        ref float p5 = ref Unsafe.Add(ref p4, pStride);
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        TV a40 = default, a41 = default, a42 = default, a43 = default;
        TV a50 = default, a51 = default, a52 = default, a53 = default;
        nint line = ahead;
        ref float vr = ref v;
        for (nint j = 0; j < n; j++)
        {
            AskLine<TA>(line);
            line += AheadBytesPerStep;
            var v0 = TL.Load(ref vr, 0);
            var v1 = TL.Load(ref vr, w);
            var v2 = TL.Load(ref vr, 2 * w);
            var v3 = TL.Load(ref vr, 3 * w);
            vr = ref Unsafe.Add(ref vr, vStride);

            var b = TL.Splat(Unsafe.Add(ref p, j));
            a00 = TL.Fma(b, v0, a00);
            a01 = TL.Fma(b, v1, a01);
            a02 = TL.Fma(b, v2, a02);
            a03 = TL.Fma(b, v3, a03);
            b = TL.Splat(Unsafe.Add(ref p1, j));
            a10 = TL.Fma(b, v0, a10);
            a11 = TL.Fma(b, v1, a11);
            a12 = TL.Fma(b, v2, a12);
            a13 = TL.Fma(b, v3, a13);
            b = TL.Splat(Unsafe.Add(ref p2, j));
            a20 = TL.Fma(b, v0, a20);
            a21 = TL.Fma(b, v1, a21);
            a22 = TL.Fma(b, v2, a22);
            a23 = TL.Fma(b, v3, a23);
            b = TL.Splat(Unsafe.Add(ref p3, j));
            a30 = TL.Fma(b, v0, a30);
            a31 = TL.Fma(b, v1, a31);
            a32 = TL.Fma(b, v2, a32);
            a33 = TL.Fma(b, v3, a33);
            b = TL.Splat(Unsafe.Add(ref p4, j));
            a40 = TL.Fma(b, v0, a40);
            a41 = TL.Fma(b, v1, a41);
            a42 = TL.Fma(b, v2, a42);
            a43 = TL.Fma(b, v3, a43);
            b = TL.Splat(Unsafe.Add(ref p5, j));
            a50 = TL.Fma(b, v0, a50);
            a51 = TL.Fma(b, v1, a51);
            a52 = TL.Fma(b, v2, a52);
            a53 = TL.Fma(b, v3, a53);
        }

        Store4(ref o, 0, w, a00, a01, a02, a03);
        Store4(ref o, oStride, w, a10, a11, a12, a13);
        Store4(ref o, 2 * oStride, w, a20, a21, a22, a23);
        Store4(ref o, 3 * oStride, w, a30, a31, a32, a33);
        Store4(ref o, 4 * oStride, w, a40, a41, a42, a43);
        Store4(ref o, 5 * oStride, w, a50, a51, a52, a53);
    }

    /// <summary>O[0..4, 0..2W) = Σ_{j &lt; n} P[0..4, j] · V[j, 0..2W): the tile for CPUs with 16 vector registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pv4x2(ref float p, nint pStride, int n, ref float v, nint vStride, ref float o, nint oStride)
    {
        nint w = TL.Count;
        ref float p1 = ref Unsafe.Add(ref p, pStride);
        ref float p2 = ref Unsafe.Add(ref p1, pStride);
        ref float p3 = ref Unsafe.Add(ref p2, pStride);
        TV a00 = default, a01 = default, a10 = default, a11 = default;
        TV a20 = default, a21 = default, a30 = default, a31 = default;
        ref float vr = ref v;
        for (nint j = 0; j < n; j++)
        {
            var v0 = TL.Load(ref vr, 0);
            var v1 = TL.Load(ref vr, w);
            vr = ref Unsafe.Add(ref vr, vStride);
            var b = TL.Splat(Unsafe.Add(ref p, j));
            a00 = TL.Fma(b, v0, a00);
            a01 = TL.Fma(b, v1, a01);
            b = TL.Splat(Unsafe.Add(ref p1, j));
            a10 = TL.Fma(b, v0, a10);
            a11 = TL.Fma(b, v1, a11);
            b = TL.Splat(Unsafe.Add(ref p2, j));
            a20 = TL.Fma(b, v0, a20);
            a21 = TL.Fma(b, v1, a21);
            b = TL.Splat(Unsafe.Add(ref p3, j));
            a30 = TL.Fma(b, v0, a30);
            a31 = TL.Fma(b, v1, a31);
        }

        Store2(ref o, 0, w, a00, a01);
        Store2(ref o, oStride, w, a10, a11);
        Store2(ref o, 2 * oStride, w, a20, a21);
        Store2(ref o, 3 * oStride, w, a30, a31);
    }

    /// <summary>
    /// O[0, 0..4W) = Σ_{j &lt; n} P[j] · V[j, 0..4W): one row's four vectors of columns in four
    /// independent chains, where <see cref="Pv1x1"/> would wait on one chain's FMA latency per key.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pv1x4(ref float p, int n, ref float v, nint vStride, ref float o)
    {
        nint w = TL.Count;
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        ref float vr = ref v;
        for (nint j = 0; j < n; j++)
        {
            var b = TL.Splat(Unsafe.Add(ref p, j));
            a0 = TL.Fma(b, TL.Load(ref vr, 0), a0);
            a1 = TL.Fma(b, TL.Load(ref vr, w), a1);
            a2 = TL.Fma(b, TL.Load(ref vr, 2 * w), a2);
            a3 = TL.Fma(b, TL.Load(ref vr, 3 * w), a3);
            vr = ref Unsafe.Add(ref vr, vStride);
        }

        Store4(ref o, 0, w, a0, a1, a2, a3);
    }

    /// <summary>O[0, 0..W) = Σ_{j &lt; n} P[j] · V[j, 0..W).</summary>
    public static void Pv1x1(ref float p, int n, ref float v, nint vStride, ref float o)
    {
        TV acc = default;
        for (nint j = 0; j < n; j++)
        {
            acc = TL.Fma(TL.Splat(Unsafe.Add(ref p, j)), TL.Load(ref v, j * vStride), acc);
        }

        TL.Store(acc, ref o, 0);
    }

    /// <summary>
    /// The softmax's m = max_j s_j over columns [cLo, cHi) (16-aligned) of a score row of Bp (a
    /// multiple of 16) entries, masked entries −∞; −∞ when every entry is masked. The other columns
    /// are masked, so they cannot raise the maximum.
    /// </summary>
    public static float RowMax(ref float s, int cLo, int cHi)
    {
        nint w = TL.Count;

        // Two chains of maxima: the maximum is exact, so how the lanes are paired does not matter.
        var vmax0 = TL.Splat(float.NegativeInfinity);
        var vmax1 = vmax0;
        nint c = cLo;
        for (; c + (2 * w) <= cHi; c += 2 * w)
        {
            vmax0 = TL.Max(vmax0, TL.Load(ref s, c));
            vmax1 = TL.Max(vmax1, TL.Load(ref s, c + w));
        }

        for (; c < cHi; c += w)
        {
            vmax0 = TL.Max(vmax0, TL.Load(ref s, c));
        }

        // + 0 turns a −0 maximum into +0, so the stored m does not depend on which lane won.
        return TL.MaxAcross(TL.Max(vmax0, vmax1)) + 0f;
    }

    /// <summary>
    /// s_j ← s_j·scale over columns [cLo, cHi) (16-aligned) of a row that sees all of them, and
    /// returns their maximum as <see cref="RowMax"/> does: <see cref="PrepareRow"/> and
    /// <see cref="RowMax"/> in one pass, for logits with no other modifier and no mask.
    /// </summary>
    public static float ScaleRowMax(ref float s, int cLo, int cHi, float scale)
    {
        nint w = TL.Count;
        var vs = TL.Splat(scale);
        var vmax0 = TL.Splat(float.NegativeInfinity);
        var vmax1 = vmax0;
        nint c = cLo;
        for (; c + (2 * w) <= cHi; c += 2 * w)
        {
            var x0 = TL.Multiply(TL.Load(ref s, c), vs);
            var x1 = TL.Multiply(TL.Load(ref s, c + w), vs);
            TL.Store(x0, ref s, c);
            TL.Store(x1, ref s, c + w);
            vmax0 = TL.Max(vmax0, x0);
            vmax1 = TL.Max(vmax1, x1);
        }

        for (; c < cHi; c += w)
        {
            var x0 = TL.Multiply(TL.Load(ref s, c), vs);
            TL.Store(x0, ref s, c);
            vmax0 = TL.Max(vmax0, x0);
        }

        return TL.MaxAcross(TL.Max(vmax0, vmax1)) + 0f;
    }

    /// <summary>
    /// For rows [0, <paramref name="rows"/>) of a tile, row r's scores at <c>s + r·ld</c> with
    /// maximum <c>m[r]</c>: P_j = e^(s_j − m) over columns [cLo, cHi) (16-aligned) into
    /// <c>p + r·ld</c>, and l[r] = Σ_j P_j summed in 16 lanes (lane t takes j ≡ t mod 16, in
    /// ascending j) and then a fixed pairwise tree over the lanes. m = −∞ (no visible key) gives
    /// P = 0 and l = 0. The other columns are masked: their P is never read, and skipping their +0
    /// terms leaves every lane unchanged. The exponential's constants are splatted once for the
    /// tile, not once a row (a row of 128 columns is 8 vectors at AVX-512's width).
    /// </summary>
    public static void ExpRows(ref float s, ref float p, int ld, int rows, int cLo, int cHi, ReadOnlySpan<float> m, Span<float> l, Span<float> lanes16)
    {
        var k = VectorMath.ExpConstants<TL, TV>.Create();
        for (int r = 0; r < rows; r++)
        {
            ref float sr = ref Unsafe.Add(ref s, r * ld);
            ref float pr = ref Unsafe.Add(ref p, r * ld);
            if (float.IsNegativeInfinity(m[r]))
            {
                // A loop, not a call: a call here would make the constants in registers spill around it.
                for (int c = cLo; c < cHi; c++)
                {
                    Unsafe.Add(ref pr, c) = 0f;
                }

                l[r] = 0f;
            }
            else
            {
                l[r] = TL.Count < 4 ? ExpSumScalar(ref sr, ref pr, cLo, cHi, m[r], lanes16) : ExpRow(ref sr, ref pr, cLo, cHi, m[r], k);
            }
        }
    }

    /// <summary>One row of <see cref="ExpRows"/> with a finite maximum at W ≥ 4 lanes, with the constants given.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ExpRow(ref float s, ref float p, int cLo, int cHi, float m, in VectorMath.ExpConstants<TL, TV> k)
    {
        nint w = TL.Count;
        nint c;
        var vm = TL.Splat(m);

        // The 16 lanes as 16/W ≤ 4 vectors in registers: vector g of each 16 columns adds into a_g.
        var a0 = TL.Splat(0f);
        TV a1 = a0, a2 = a0, a3 = a0;
        for (c = cLo; c < cHi; c += 16)
        {
            var e = VectorMath.Exp(TL.Subtract(TL.Load(ref s, c), vm), k);
            TL.Store(e, ref p, c);
            a0 = TL.Add(a0, e);
            if (w <= 8)
            {
                e = VectorMath.Exp(TL.Subtract(TL.Load(ref s, c + w), vm), k);
                TL.Store(e, ref p, c + w);
                a1 = TL.Add(a1, e);
            }

            if (w == 4)
            {
                e = VectorMath.Exp(TL.Subtract(TL.Load(ref s, c + 8), vm), k);
                TL.Store(e, ref p, c + 8);
                a2 = TL.Add(a2, e);
                e = VectorMath.Exp(TL.Subtract(TL.Load(ref s, c + 12), vm), k);
                TL.Store(e, ref p, c + 12);
                a3 = TL.Add(a3, e);
            }
        }

        return SumLanes(a0, a1, a2, a3);
    }

    /// <summary>One row of <see cref="ExpRows"/> with a finite maximum below 4 lanes: its exponentials and their 16-lane sum one element at a time.</summary>
    private static float ExpSumScalar(ref float s, ref float p, int cLo, int cHi, float m, Span<float> lanes16)
    {
        lanes16.Clear();
        for (int c = cLo; c < cHi; c++)
        {
            float e = VectorMath.Exp(Unsafe.Add(ref s, c) - m);
            Unsafe.Add(ref p, c) = e;
            lanes16[c & 15] += e;
        }

        return SumLanes16(lanes16);
    }

    /// <summary>
    /// t = Σ_j P_j·s_j over columns [cLo, cHi) of one row (P = e^(s − m) from <see cref="ExpRows"/>;
    /// a masked s = −∞ has P = 0 and counts as 0, never as 0·(−∞)), in 16 lanes (lane t takes
    /// j ≡ t mod 16, ascending j) and then a fixed pairwise tree over the lanes.
    /// </summary>
    public static float WeightedLogitSum(ref float s, ref float p, int cLo, int cHi, Span<float> lanes16)
    {
        nint w = TL.Count;
        int groups = 16 / TL.Count;
        Span<TV> acc = stackalloc TV[groups];
        acc.Clear();
        var zero = TL.Splat(0f);
        var lowest = TL.Splat(float.MinValue);
        int g = 0;
        for (nint c = cLo; c < cHi; c += w)
        {
            var x = TL.Load(ref s, c);
            acc[g] = TL.Fma(TL.Load(ref p, c), TL.SelectWhereLess(x, lowest, zero, x), acc[g]);
            g = g + 1 == groups ? 0 : g + 1;
        }

        return SumLanes(acc, lanes16);
    }

    /// <summary>
    /// The sum of 16 lanes held as 16/W vectors (lane t of the whole is lane t mod W of vector
    /// t / W): stored in order, then a fixed pairwise tree (t + t+8, then t + t+4, …), the same
    /// at every width.
    /// </summary>
    public static float SumLanes(ReadOnlySpan<TV> acc, Span<float> lanes16)
    {
        if (TL.Count >= 4)
        {
            var zero = TL.Splat(0f);
            return SumLanes(acc[0], acc.Length > 1 ? acc[1] : zero, acc.Length > 2 ? acc[2] : zero, acc.Length > 3 ? acc[3] : zero);
        }

        for (int i = 0; i < acc.Length; i++)
        {
            TL.StoreLanes(acc[i], lanes16.Slice(i * TL.Count, TL.Count));
        }

        return SumLanes16(lanes16);
    }

    /// <summary>
    /// <see cref="SumLanes(ReadOnlySpan{TV}, Span{float})"/> for W ≥ 4, the 16/W vectors in registers
    /// (the unused ones ignored). Each step adds the same pairs of lanes as <see cref="SumLanes16"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SumLanes(TV a0, TV a1, TV a2, TV a3)
    {
        if (typeof(TV) == typeof(Vector512<float>))
        {
            var v = Unsafe.As<TV, Vector512<float>>(ref a0);
            return SumLanes8(v.GetLower() + v.GetUpper());
        }

        if (typeof(TV) == typeof(Vector256<float>))
        {
            return SumLanes8(Unsafe.As<TV, Vector256<float>>(ref a0) + Unsafe.As<TV, Vector256<float>>(ref a1));
        }

        // Lanes t and t + 8 sit in vectors i and i + 2; then t and t + 4 in the two sums.
        var low = Unsafe.As<TV, Vector128<float>>(ref a0) + Unsafe.As<TV, Vector128<float>>(ref a2);
        var high = Unsafe.As<TV, Vector128<float>>(ref a1) + Unsafe.As<TV, Vector128<float>>(ref a3);
        return SumLanes4(low + high);
    }

    /// <summary>The fixed pairwise tree over 16 stored lanes: t + t+8, then t + t+4, t + t+2, t + t+1.</summary>
    private static float SumLanes16(Span<float> lanes16)
    {
        for (int half = 8; half >= 1; half >>= 1)
        {
            for (int t = 0; t < half; t++)
            {
                lanes16[t] += lanes16[t + half];
            }
        }

        return lanes16[0];
    }

    /// <summary>Lanes 0..7 after the first step of <see cref="SumLanes(TV, TV, TV, TV)"/>: t + t+4, then the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SumLanes8(Vector256<float> x) => SumLanes4(x.GetLower() + x.GetUpper());

    /// <summary>Lanes 0..3: t + t+2, then lane 0 + lane 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SumLanes4(Vector128<float> y)
    {
        var z = y + Vector128.Shuffle(y, Vector128.Create(2, 3, 0, 1));
        return z.ToScalar() + z.GetElement(1);
    }

    /// <summary>
    /// Turns raw accumulated scores of one row into logits: s·scale, then c·tanh(s/c) when capped,
    /// then + slope·(j − i) for ALiBi (fused), then −∞ outside the visible keys [lo, hi) and the
    /// block's n real keys (indices local to the block). Only columns [cLo, cHi) are touched.
    /// </summary>
    public static void PrepareRow(ref float s, int cLo, int cHi, in RowModifiers mods, int alibiOffset, int lo, int hi, int n)
    {
        nint w = TL.Count;
        var scale = TL.Splat(mods.Scale);
        if (mods.ApplyScale)
        {
            for (nint c = cLo; c < cHi; c += w)
            {
                TL.Store(TL.Multiply(TL.Load(ref s, c), scale), ref s, c);
            }
        }

        if (mods.SoftCap > 0)
        {
            var cap = TL.Splat(mods.SoftCap);
            var inv = TL.Splat(1f / mods.SoftCap);
            for (nint c = cLo; c < cHi; c += w)
            {
                TL.Store(TL.Multiply(cap, VectorMath.Tanh<TL, TV>(TL.Multiply(TL.Load(ref s, c), inv))), ref s, c);
            }
        }

        if (mods.AlibiSlope is { } slope)
        {
            // s −= slope·|i + D − j|: x = j − i − D is an integer below 2^24 in magnitude, so base +
            // lane and |x| are exact in float32, and the fused multiply-add rounds once.
            var vs = TL.Splat(-slope);
            for (nint c = cLo; c < cHi; c += w)
            {
                var offset = TL.Add(TL.Splat(alibiOffset - mods.AlibiDiagonal + (int)c), TL.Iota);
                TL.Store(TL.Fma(vs, TL.Abs(offset), TL.Load(ref s, c)), ref s, c);
            }
        }

        int visibleEnd = Math.Min(hi, n);
        for (int j = cLo; j < Math.Min(lo, cHi); j++)
        {
            Unsafe.Add(ref s, j) = float.NegativeInfinity;
        }

        for (int j = Math.Max(visibleEnd, cLo); j < cHi; j++)
        {
            Unsafe.Add(ref s, j) = float.NegativeInfinity;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(ref float dst, nint offset, nint w, TV x0, TV x1)
    {
        TL.Store(x0, ref dst, offset);
        TL.Store(x1, ref dst, offset + w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store4(ref float dst, nint offset, nint w, TV x0, TV x1, TV x2, TV x3)
    {
        TL.Store(x0, ref dst, offset);
        TL.Store(x1, ref dst, offset + w);
        TL.Store(x2, ref dst, offset + (2 * w));
        TL.Store(x3, ref dst, offset + (3 * w));
    }
}

/// <summary>What is applied to a row's raw scores: the scale, soft-capping, and ALiBi's −slope·|i + D − j| (D: <see cref="AlibiDiagonal"/>, the diagonal offset).</summary>
internal readonly record struct RowModifiers(bool ApplyScale, float Scale, float SoftCap, float? AlibiSlope, int AlibiDiagonal)
{
    /// <summary>No soft-cap and no ALiBi: the logits are the scores, scaled or not.</summary>
    public bool IsScaleOnly => SoftCap <= 0 && AlibiSlope is null;
}
