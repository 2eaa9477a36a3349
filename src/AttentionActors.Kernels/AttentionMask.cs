using System.Runtime.InteropServices;

namespace AttentionActors.Kernels;

/// <summary>
/// The broadcast shape of an explicit mask <c>[Batch, Heads, Nq, Nk]</c>: <see cref="Batch"/> is 1
/// (one plane for every batch entry) or B, <see cref="Heads"/> is 1 or H, as PyTorch broadcasts
/// <c>attn_mask</c>.
/// </summary>
public readonly record struct MaskShape(int Batch, int Heads)
{
    /// <summary>The plane that batch entry <paramref name="b"/>, query head <paramref name="h"/> reads.</summary>
    public int PlaneOf(int b, int h) => ((Batch == 1 ? 0 : b) * Heads) + (Heads == 1 ? 0 : h);

    public override string ToString() => $"mask[{Batch}, {Heads}, Nq, Nk]";
}

/// <summary>
/// An explicit mask as PyTorch's <c>attn_mask</c>: additive values M[b, h, i, j] added to each logit
/// after the scale, soft-cap and ALiBi, −∞ marking a key the query may not attend. A boolean mask
/// (True = may attend, PyTorch's SDPA convention) is the additive mask 0 / −∞. It adds to the
/// built-in masks (causal, window, padding, lengths): a key is attended only when all allow it. A row
/// that may attend no key gets output 0 and lse −∞, as rows under the built-in masks do (PyTorch's
/// SDPA returns NaN there). Values: −∞ or finite with |M| ≤ <see cref="AttentionProblem.MaxLogit"/>;
/// NaN and +∞ are refused, and so are large finite "masking" values such as float32's minimum, which
/// would leave a row of only such keys uniformly weighted instead of masked.
/// A <em>window</em> holds rows × keys of one plane (a shard's share), indexed with global positions.
/// </summary>
public sealed class AttentionMask
{
    /// <summary>Most elements (all planes) a mask may have: explicit masks are for small problems; 2^26 floats are 256 MiB.</summary>
    public const long MaxElements = 1L << 26;

    private const int NegativeInfinityBits = unchecked((int)0xFF800000);

    private readonly int windowPlane;

    private AttentionMask(MaskShape shape, int querySeq, int keySeq, ReadOnlyMemory<float> data, int windowPlane, int rowStart, int rowCount, int keyStart, int keyCount)
    {
        Shape = shape;
        QuerySeq = querySeq;
        KeySeq = keySeq;
        Data = data;
        this.windowPlane = windowPlane;
        RowStart = rowStart;
        RowCount = rowCount;
        KeyStart = keyStart;
        KeyCount = keyCount;
    }

    public MaskShape Shape { get; }

    public int QuerySeq { get; }

    public int KeySeq { get; }

    /// <summary>The values held: every plane <c>[Batch, Heads, Nq, Nk]</c>, or a window's <c>[RowCount, KeyCount]</c>.</summary>
    public ReadOnlyMemory<float> Data { get; }

    public bool IsWindow => windowPlane >= 0;

    /// <summary>First row held (0 unless a window).</summary>
    public int RowStart { get; }

    public int RowCount { get; }

    /// <summary>First key held (0 unless a window).</summary>
    public int KeyStart { get; }

    public int KeyCount { get; }

    /// <summary>An additive mask <c>[batch, heads, querySeq, keySeq]</c> over <paramref name="values"/> (not copied), every value checked.</summary>
    public static AttentionMask Additive(ReadOnlyMemory<float> values, int batch, int heads, int querySeq, int keySeq, string name = "mask")
    {
        if (batch < 1 || heads < 1 || querySeq < 0 || keySeq < 0)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {querySeq}, {keySeq}] is not a mask shape");
        }

        long count = (long)batch * heads * querySeq * keySeq;
        if (count > MaxElements)
        {
            throw TooLarge(name, batch, heads, querySeq, keySeq);
        }

        if (values.Length != count)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {querySeq}, {keySeq}] needs {count} values but holds {values.Length}");
        }

        var mask = new AttentionMask(new MaskShape(batch, heads), querySeq, keySeq, values, -1, 0, querySeq, 0, keySeq);
        mask.CheckValues(name);
        return mask;
    }

    /// <summary>A boolean mask (true = may attend) as the additive mask 0 / −∞.</summary>
    public static AttentionMask Boolean(ReadOnlySpan<bool> allowed, int batch, int heads, int querySeq, int keySeq, string name = "mask")
    {
        if ((long)batch * heads * querySeq * keySeq > MaxElements)
        {
            throw TooLarge(name, batch, heads, querySeq, keySeq);
        }

        var values = new float[allowed.Length];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = allowed[i] ? 0f : float.NegativeInfinity;
        }

        return Additive(values, batch, heads, querySeq, keySeq, name);
    }

    /// <summary>
    /// Rows [rowStart, rowStart + rowCount) × keys [keyStart, keyStart + keyCount) of the plane that
    /// (b, h) reads, held compactly in <paramref name="data"/>; counts and every value checked.
    /// </summary>
    public static AttentionMask Window(MaskShape shape, int querySeq, int keySeq, ReadOnlyMemory<float> data, int b, int h, int rowStart, int rowCount, int keyStart, int keyCount)
    {
        if (rowStart < 0 || rowCount < 0 || (long)rowStart + rowCount > querySeq || keyStart < 0 || keyCount < 0 || (long)keyStart + keyCount > keySeq)
        {
            throw new AttentionInputException($"mask window rows [{rowStart}, {(long)rowStart + rowCount}) × keys [{keyStart}, {(long)keyStart + keyCount}) is outside [{querySeq}, {keySeq}]");
        }

        if (data.Length != (long)rowCount * keyCount)
        {
            throw new AttentionInputException($"mask window of {rowCount} rows × {keyCount} keys needs {(long)rowCount * keyCount} values but holds {data.Length}");
        }

        var mask = new AttentionMask(shape, querySeq, keySeq, data, shape.PlaneOf(b, h), rowStart, rowCount, keyStart, keyCount);
        mask.CheckValues("mask");
        return mask;
    }

    /// <summary>M[b, h, i, keyStart .. keyStart + count) (global indices; a window must hold them).</summary>
    public ReadOnlySpan<float> Keys(int b, int h, int i, int keyStart, int count)
    {
        long offset = IsWindow
            ? ((long)(i - RowStart) * KeyCount) + (keyStart - KeyStart)
            : ((((long)Shape.PlaneOf(b, h) * QuerySeq) + i) * KeySeq) + keyStart;
        return Data.Span.Slice((int)offset, count);
    }

    /// <summary>A compact copy <c>[rowCount, keyCount]</c> of what (b, h) reads: a shard's share.</summary>
    public float[] Copy(int b, int h, int rowStart, int rowCount, int keyStart, int keyCount)
    {
        var copy = new float[(long)rowCount * keyCount];
        for (int r = 0; r < rowCount; r++)
        {
            Keys(b, h, rowStart + r, keyStart, keyCount).CopyTo(copy.AsSpan(r * keyCount, keyCount));
        }

        return copy;
    }

    /// <summary>The first and one past the last key of [lo, hi) that M[b, h, i, ·] does not mask; empty (lo ≥ hi) when it masks them all.</summary>
    public (int Lo, int Hi) Allowed(int b, int h, int i, int lo, int hi)
    {
        if (hi <= lo)
        {
            return (lo, lo);
        }

        // Values are checked: anything but −∞ is finite, so comparing bits finds it (vectorized for int).
        var bits = MemoryMarshal.Cast<float, int>(Keys(b, h, i, lo, hi - lo));
        int first = bits.IndexOfAnyExcept(NegativeInfinityBits);
        if (first < 0)
        {
            return (lo, lo);
        }

        return (lo + first, lo + bits.LastIndexOfAnyExcept(NegativeInfinityBits) + 1);
    }

    public override string ToString() => IsWindow
        ? $"mask[{Shape.Batch}, {Shape.Heads}, {QuerySeq}, {KeySeq}] rows [{RowStart}, {RowStart + RowCount}) × keys [{KeyStart}, {KeyStart + KeyCount}) of plane {windowPlane}"
        : $"mask[{Shape.Batch}, {Shape.Heads}, {QuerySeq}, {KeySeq}]";

    internal static AttentionInputException TooLarge(string name, long batch, long heads, long querySeq, long keySeq)
        => new($"{name}: [{batch}, {heads}, {querySeq}, {keySeq}] is {batch * heads * querySeq * keySeq} values, more than the {MaxElements} an explicit mask may have; express it with --causal, --window, --key-lengths or --seq-lengths, which cost nothing");

    private void CheckValues(string name)
    {
        var span = Data.Span;
        for (int at = 0; at < span.Length; at++)
        {
            float x = span[at];
            if (float.IsNegativeInfinity(x) || (float.IsFinite(x) && Math.Abs(x) <= AttentionProblem.MaxLogit))
            {
                continue;
            }

            string why = float.IsNaN(x) || float.IsPositiveInfinity(x)
                ? "only finite values and −inf (may not attend) are allowed"
                : $"finite values must lie within ±{AttentionProblem.MaxLogit:G1}: write −inf, or use a boolean mask, for keys that may not be attended";
            throw new AttentionInputException($"{name}{Describe(at)} is {x}; {why}");
        }
    }

    private string Describe(long at)
    {
        long i = at / Math.Max(KeyCount, 1), j = at % Math.Max(KeyCount, 1);
        if (IsWindow)
        {
            return $" (plane {windowPlane}) [{RowStart + i}, {KeyStart + j}]";
        }

        long plane = i / Math.Max(QuerySeq, 1);
        return $"[{plane / Shape.Heads}, {plane % Shape.Heads}, {i % Math.Max(QuerySeq, 1)}, {j}]";
    }
}
