using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Partials;

/// <summary>The merge and finalize of DESIGN §2, for one query row. Every path uses these.</summary>
public static class PartialMath
{
    /// <summary>
    /// (m1, l1, o1) ← (m1, l1, o1) ⊕ (m2, l2, o2). With m = max(m1, m2), a = e^(m1−m), b = e^(m2−m):
    /// l = a·l1 + b·l2 and o = a·o1 + b·o2, each as <c>fma(a, x1, b·x2)</c>.
    /// The identity (m = −∞) is returned unchanged: <c>e^(−∞ − (−∞))</c> is never formed.
    /// </summary>
    public static void MergeInto(ref float m1, ref float l1, Span<float> o1, float m2, float l2, ReadOnlySpan<float> o2)
    {
        if (float.IsNegativeInfinity(m2))
        {
            return;
        }

        if (float.IsNegativeInfinity(m1))
        {
            m1 = m2;
            l1 = l2;
            o2.CopyTo(o1);
            return;
        }

        float m = Math.Max(m1, m2);
        float a = VectorMath.Exp(m1 - m);
        float b = VectorMath.Exp(m2 - m);
        m1 = m;
        l1 = MathF.FusedMultiplyAdd(a, l1, b * l2);
        ScaleAdd(a, o1, b, o2);
    }

    /// <summary>out = o / l and lse = m + ln l; a row with no visible key gives out = 0 and lse = −∞.</summary>
    public static void Finalize(float m, float l, ReadOnlySpan<float> o, Span<float> output, out float lse)
    {
        if (l == 0f)
        {
            output.Clear();
            lse = float.NegativeInfinity;
            return;
        }

        for (int c = 0; c < o.Length; c++)
        {
            output[c] = o[c] / l;
        }

        lse = m + MathF.Log(l);
    }

    private static void ScaleAdd(float a, Span<float> o1, float b, ReadOnlySpan<float> o2)
    {
        if (Lanes.Width >= 16)
        {
            ScaleAdd<Lanes512, System.Runtime.Intrinsics.Vector512<float>>(a, o1, b, o2);
        }
        else if (Lanes.Width >= 8)
        {
            ScaleAdd<Lanes256, System.Runtime.Intrinsics.Vector256<float>>(a, o1, b, o2);
        }
        else if (Lanes.Width >= 4)
        {
            ScaleAdd<Lanes128, System.Runtime.Intrinsics.Vector128<float>>(a, o1, b, o2);
        }
        else
        {
            ScaleAdd<LanesScalar, float>(a, o1, b, o2);
        }
    }

    private static void ScaleAdd<TL, TV>(float a, Span<float> o1, float b, ReadOnlySpan<float> o2)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        ref float x = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(o1);
        ref float y = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(o2);
        var va = TL.Splat(a);
        var vb = TL.Splat(b);
        int c = 0;
        for (; c + TL.Count <= o1.Length; c += TL.Count)
        {
            TL.Store(TL.Fma(va, TL.Load(ref x, c), TL.Multiply(vb, TL.Load(ref y, c))), ref x, c);
        }

        for (; c < o1.Length; c++)
        {
            o1[c] = MathF.FusedMultiplyAdd(a, o1[c], b * o2[c]);
        }
    }
}
