using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Partials;

/// <summary>
/// The merge and finalize of the online softmax, for one query row; every path uses these.
/// A partial over key set B is (m, l, o) = (max s_j, Σ e^(s_j − m), Σ e^(s_j − m)·v_j); the identity is (−∞, 0, 0);
/// finalize gives out = o / l and lse = m + ln l, or 0 and −∞ when l = 0.
/// </summary>
public static class PartialMath
{
    /// <summary>
    /// (m1, l1, o1) ← (m1, l1, o1) ⊕ (m2, l2, o2). With m = max(m1, m2) one of the factors
    /// e^(m1−m), e^(m2−m) is exactly 1, so l = l_big + e^(m_small − m)·l_small and likewise o, each
    /// one fused multiply-add: a single rounding, and the same bits whichever side is which.
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

        if (m1 >= m2)
        {
            float b = VectorMath.Exp(m2 - m1);
            l1 = MathF.FusedMultiplyAdd(b, l2, l1);
            AddScaled(o1, b, o2, o1);
        }
        else
        {
            float a = VectorMath.Exp(m1 - m2);
            m1 = m2;
            l1 = MathF.FusedMultiplyAdd(a, l1, l2);
            AddScaled(o2, a, o1, o1);
        }
    }

    /// <summary>
    /// out = o / l and lse = m + ln l; a row with no visible key gives out = 0 and lse = −∞.
    /// Adding +0 turns a −0 into +0: a sum of exactly-zero terms may carry either sign of zero
    /// depending on how many zero terms a tile skipped, and the output must not.
    /// </summary>
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
            output[c] = (o[c] / l) + 0f;
        }

        lse = m + MathF.Log(l);
    }

    /// <summary>
    /// The entropy of a finished row from its partial's l and t = Σ e^(s−m)·s and its lse:
    /// H = lse − t/l (Σ_j a_ij·s_ij = t/l); 0 for a row that sees no key.
    /// </summary>
    public static float Entropy(float l, float t, float lse) => l == 0f ? 0f : lse - (t / l);

    /// <summary>destination = big + factor·small, element-wise as fma(factor, small, big).</summary>
    private static void AddScaled(ReadOnlySpan<float> big, float factor, ReadOnlySpan<float> small, Span<float> destination)
    {
        if (Lanes.Width >= 16)
        {
            AddScaled<Lanes512, System.Runtime.Intrinsics.Vector512<float>>(big, factor, small, destination);
        }
        else if (Lanes.Width >= 8)
        {
            AddScaled<Lanes256, System.Runtime.Intrinsics.Vector256<float>>(big, factor, small, destination);
        }
        else if (Lanes.Width >= 4)
        {
            AddScaled<Lanes128, System.Runtime.Intrinsics.Vector128<float>>(big, factor, small, destination);
        }
        else
        {
            AddScaled<LanesScalar, float>(big, factor, small, destination);
        }
    }

    private static void AddScaled<TL, TV>(ReadOnlySpan<float> big, float factor, ReadOnlySpan<float> small, Span<float> destination)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        ref float x = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(big);
        ref float y = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(small);
        ref float z = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(destination);
        var f = TL.Splat(factor);
        int c = 0;
        for (; c + TL.Count <= destination.Length; c += TL.Count)
        {
            TL.Store(TL.Fma(f, TL.Load(ref y, c), TL.Load(ref x, c)), ref z, c);
        }

        for (; c < destination.Length; c++)
        {
            destination[c] = MathF.FusedMultiplyAdd(factor, small[c], big[c]);
        }
    }
}
