using System.Numerics;

namespace AttentionActors.Kernels;

/// <summary>Finds NaN and ±∞ in a span, a vector at a time: x − x is 0 for every finite x and NaN otherwise.</summary>
public static class FiniteCheck
{
    /// <summary>The index of the first value that is not finite, or −1.</summary>
    public static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        int width = Vector<float>.Count, i = 0;
        for (; i + width <= values.Length; i += width)
        {
            var x = new Vector<float>(values.Slice(i, width));
            if (!Vector.EqualsAll(x - x, Vector<float>.Zero))
            {
                break;
            }
        }

        for (; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }
}
