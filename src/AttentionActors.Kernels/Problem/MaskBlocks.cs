namespace AttentionActors.Kernels;

/// <summary>
/// Which key blocks each query row may attend once an explicit mask is applied: bit (b, h', i, kb)
/// is set when some key of block kb is visible to row i of batch b under the built-in masks and not
/// masked by plane (b, h') of the mask (h' = 0 when the mask has one head plane). The reducer needs it
/// to tell a node the mask hides from a node a worker skipped; it is computed from the whole mask by
/// whoever holds it, and is small: one bit per row and block.
/// </summary>
public sealed class MaskBlocks
{
    /// <summary>Largest bitmap accepted, in bytes: it travels to the reducer in one message.</summary>
    public const long MaxBytes = 4L << 20;

    private readonly int heads;
    private readonly int querySeq;
    private readonly int blockCount;

    private MaskBlocks(int batch, int heads, int querySeq, int blockCount, byte[] bits)
    {
        Batch = batch;
        this.heads = heads;
        this.querySeq = querySeq;
        this.blockCount = blockCount;
        Bits = bits;
    }

    public int Batch { get; }

    /// <summary>The bitmap, bit n of byte n / 8 for row-major index (b, h', i, kb).</summary>
    public byte[] Bits { get; }

    /// <summary>Bytes the bitmap of <paramref name="g"/>'s mask takes (0 without a mask).</summary>
    public static long SizeOf(AttentionGeometry g)
        => g.Mask is { } shape ? ((long)g.Batch * shape.Heads * g.QuerySeq * g.BlockCount + 7) / 8 : 0;

    /// <summary>The bitmap of <paramref name="mask"/> (the whole mask) under <paramref name="g"/>'s built-in masks.</summary>
    public static MaskBlocks Of(AttentionGeometry g, AttentionMask mask)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(mask);
        var shape = g.Mask ?? throw new ArgumentException("the geometry has no explicit mask", nameof(g));
        if (mask.IsWindow || mask.Shape != shape)
        {
            throw new ArgumentException($"{mask} is not the whole mask of {g}", nameof(mask));
        }

        var blocks = new MaskBlocks(g.Batch, shape.Heads, g.QuerySeq, g.BlockCount, new byte[SizeOf(g)]);
        for (int b = 0; b < g.Batch; b++)
        {
            for (int h = 0; h < shape.Heads; h++)
            {
                for (int i = 0; i < g.QuerySeq; i++)
                {
                    var (lo, hi) = g.VisibleKeys(b, i);
                    for (int kb = lo / g.BlockSize; lo < hi && kb * (long)g.BlockSize < hi; kb++)
                    {
                        int j0 = kb * g.BlockSize;
                        var (a, c) = mask.Allowed(b, h, i, Math.Max(lo, j0), Math.Min(hi, j0 + g.BlockSize));
                        if (a < c)
                        {
                            long at = blocks.Index(b, h, i, kb);
                            blocks.Bits[at >> 3] |= (byte)(1 << (int)(at & 7));
                        }
                    }
                }
            }
        }

        return blocks;
    }

    /// <summary>Wraps a bitmap that arrived from another process, checking its size against <paramref name="g"/>.</summary>
    public static MaskBlocks FromBits(AttentionGeometry g, byte[] bits)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(bits);
        var shape = g.Mask ?? throw new AttentionInputException("mask blocks arrived for a job without an explicit mask");
        if (bits.Length != SizeOf(g))
        {
            throw new AttentionInputException($"mask blocks hold {bits.Length} bytes; {g} needs {SizeOf(g)}");
        }

        return new MaskBlocks(g.Batch, shape.Heads, g.QuerySeq, g.BlockCount, bits);
    }

    /// <summary>Whether row <paramref name="i"/> of (b, query head h) attends some key of blocks [first, end).</summary>
    public bool SeesAny(int b, int h, int i, int first, int end)
    {
        int plane = heads == 1 ? 0 : h;

        // A tree node may reach past the last block (the root of a tree over 5 blocks spans 8): those blocks hold no key.
        end = Math.Min(end, blockCount);
        for (int kb = first; kb < end; kb++)
        {
            long at = Index(b, plane, i, kb);
            if ((Bits[at >> 3] & (1 << (int)(at & 7))) != 0)
            {
                return true;
            }
        }

        return false;
    }

    private long Index(int b, int plane, int i, int kb) => ((((long)b * heads) + plane) * querySeq + i) * blockCount + kb;
}
