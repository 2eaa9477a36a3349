using System.Numerics;
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

    // The array behind Data, when there is one: the kernel reads a row segment per row and block,
    // and going through Memory<T>.Span each time costs as much as the segment's work.
    private readonly float[]? array;
    private readonly int arrayOffset;

    private AttentionMask(MaskShape shape, int querySeq, int keySeq, ReadOnlyMemory<float> data, int windowPlane, int rowStart, int rowCount, int keyStart, int keyCount, int stride)
    {
        Stride = stride;
        if (MemoryMarshal.TryGetArray(data, out var segment))
        {
            array = segment.Array;
            arrayOffset = segment.Offset;
        }

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

    /// <summary>The values held: every plane <c>[Batch, Heads, Nq, Nk]</c>, or a window's rows of <see cref="KeyCount"/> values <see cref="Stride"/> apart.</summary>
    public ReadOnlyMemory<float> Data { get; }

    public bool IsWindow => windowPlane >= 0;

    /// <summary>First row held (0 unless a window).</summary>
    public int RowStart { get; }

    public int RowCount { get; }

    /// <summary>First key held (0 unless a window).</summary>
    public int KeyStart { get; }

    public int KeyCount { get; }

    /// <summary>Values from one row of a window to the next: <see cref="KeyCount"/> for a compact copy, Nk for a view of the whole mask.</summary>
    public int Stride { get; }

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

        var mask = new AttentionMask(new MaskShape(batch, heads), querySeq, keySeq, values, -1, 0, querySeq, 0, keySeq, keySeq);
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
    /// (b, h) reads, held in <paramref name="data"/> with rows <paramref name="stride"/> values apart
    /// (0: compact, <paramref name="keyCount"/>); counts and every value checked.
    /// </summary>
    public static AttentionMask Window(MaskShape shape, int querySeq, int keySeq, ReadOnlyMemory<float> data, int b, int h, int rowStart, int rowCount, int keyStart, int keyCount, int stride = 0)
    {
        if (rowStart < 0 || rowCount < 0 || (long)rowStart + rowCount > querySeq || keyStart < 0 || keyCount < 0 || (long)keyStart + keyCount > keySeq)
        {
            throw new AttentionInputException($"mask window rows [{rowStart}, {(long)rowStart + rowCount}) × keys [{keyStart}, {(long)keyStart + keyCount}) is outside [{querySeq}, {keySeq}]");
        }

        stride = stride == 0 ? keyCount : stride;
        long needed = rowCount == 0 ? 0 : ((long)(rowCount - 1) * stride) + keyCount;
        if (stride < keyCount || data.Length != needed)
        {
            throw new AttentionInputException($"mask window of {rowCount} rows × {keyCount} keys, rows {stride} apart, needs {needed} values but holds {data.Length}");
        }

        var mask = new AttentionMask(shape, querySeq, keySeq, data, shape.PlaneOf(b, h), rowStart, rowCount, keyStart, keyCount, stride);
        mask.CheckValues("mask");
        return mask;
    }

    /// <summary>
    /// What (b, h) reads of rows [rowStart, +rowCount) × keys [keyStart, +keyCount), as a view of this
    /// whole mask (rows Nk apart, nothing copied): a shard's share in one process.
    /// </summary>
    public ReadOnlyMemory<float> View(int b, int h, int rowStart, int rowCount, int keyStart, int keyCount)
    {
        if (IsWindow)
        {
            throw new InvalidOperationException($"{this} is already a window");
        }

        long first = ((((long)Shape.PlaneOf(b, h) * QuerySeq) + rowStart) * KeySeq) + keyStart;
        return rowCount == 0 ? ReadOnlyMemory<float>.Empty : Data.Slice((int)first, (int)(((long)(rowCount - 1) * KeySeq) + keyCount));
    }

    /// <summary>M[b, h, i, keyStart .. keyStart + count) (global indices; a window must hold them).</summary>
    public ReadOnlySpan<float> Keys(int b, int h, int i, int keyStart, int count)
    {
        long offset = IsWindow
            ? ((long)(i - RowStart) * Stride) + (keyStart - KeyStart)
            : ((((long)Shape.PlaneOf(b, h) * QuerySeq) + i) * KeySeq) + keyStart;
        return array is not null ? new ReadOnlySpan<float>(array, arrayOffset + (int)offset, count) : Data.Span.Slice((int)offset, count);
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
        for (int r = 0; r < RowCount * (IsWindow ? 1 : Shape.Batch * Shape.Heads); r++)
        {
            var row = span.Slice(r * Stride, KeyCount);
            int bad = FirstInvalid(row);
            if (bad < 0)
            {
                continue;
            }

            float x = row[bad];
            string why = float.IsNaN(x) || float.IsPositiveInfinity(x)
                ? "only finite values and −inf (may not attend) are allowed"
                : $"finite values must lie within ±{AttentionProblem.MaxLogit:G1}: write −inf, or use a boolean mask, for keys that may not be attended";
            throw new AttentionInputException($"{name}{Describe(((long)r * KeyCount) + bad)} is {x}; {why}");
        }
    }

    /// <summary>
    /// The first value that is neither −∞ nor finite within ±MaxLogit, or −1. On the bits: |x|'s bits
    /// order like |x| (NaN and ∞ above every finite value), so one compare per lane finds it.
    /// </summary>
    private static int FirstInvalid(ReadOnlySpan<float> values)
    {
        var bits = MemoryMarshal.Cast<float, int>(values);
        int limit = BitConverter.SingleToInt32Bits((float)AttentionProblem.MaxLogit);
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var magnitude = new Vector<int>(int.MaxValue);
            var vlimit = new Vector<int>(limit);
            var negativeInfinity = new Vector<int>(NegativeInfinityBits);
            for (; i + Vector<int>.Count <= bits.Length; i += Vector<int>.Count)
            {
                var x = new Vector<int>(bits.Slice(i, Vector<int>.Count));
                var ok = Vector.LessThanOrEqual(x & magnitude, vlimit) | Vector.Equals(x, negativeInfinity);
                if (!Vector.EqualsAll(ok, new Vector<int>(-1)))
                {
                    break;
                }
            }
        }

        for (; i < bits.Length; i++)
        {
            if ((bits[i] & int.MaxValue) > limit && bits[i] != NegativeInfinityBits)
            {
                return i;
            }
        }

        return -1;
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
