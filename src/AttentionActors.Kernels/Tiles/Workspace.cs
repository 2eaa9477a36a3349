using System.Runtime.CompilerServices;
using AttentionActors.Kernels.Partials;

namespace AttentionActors.Kernels.Tiles;

/// <summary>
/// Scratch memory of one thread working on one query panel: packed keys, the score and
/// probability tiles, and the stack of tree-node partials per row. Reused across panels.
/// </summary>
internal sealed class Workspace
{
    [ThreadStatic]
    private static Workspace? cached;

    public AlignedFloats S = AlignedFloats.Empty;
    public AlignedFloats P = AlignedFloats.Empty;
    public AlignedFloats QPanel = AlignedFloats.Empty;
    public float[] StackM = [];
    public float[] StackL = [];
    public AlignedFloats StackO = AlignedFloats.Empty;
    public TreeNode[] Nodes = [];
    public PanelTile[] Tiles = [];
    public int[] RowLo = [];
    public int[] RowHi = [];
    public int[] BlockLo = [];
    public int[] BlockHi = [];
    public readonly float[] Lanes16 = new float[16];

    private AlignedFloats keyColumns = AlignedFloats.Empty;

    public int SlotRows { get; private set; }

    public int ValueDim { get; private set; }

    /// <summary>The calling thread's workspace, grown to fit.</summary>
    public static Workspace For(int depth, int bp, int panelRows, int valueDim, int maxSlots)
    {
        var ws = cached ??= new Workspace();
        ws.Ensure(depth, bp, panelRows, valueDim, maxSlots);
        return ws;
    }

    private void Ensure(int depth, int bp, int panelRows, int valueDim, int maxSlots)
    {
        // Scores and probabilities of a whole panel: the attention pass computes every tile's S for one
        // chunk of keys before the next chunk, so the chunk's packed keys stay in L1 across tiles.
        Grow(ref S, Math.Max(panelRows, PanelKernelShape.MaxTileRows) * bp);
        Grow(ref P, Math.Max(panelRows, PanelKernelShape.MaxTileRows) * bp);
        Grow(ref QPanel, panelRows * depth);
        Grow(ref StackM, maxSlots * panelRows);
        Grow(ref StackL, maxSlots * panelRows);
        Grow(ref StackO, maxSlots * panelRows * valueDim);
        if (Tiles.Length < panelRows)
        {
            Tiles = new PanelTile[panelRows];
        }

        if (Nodes.Length < maxSlots)
        {
            Nodes = new TreeNode[maxSlots];
        }

        if (RowLo.Length < panelRows)
        {
            RowLo = new int[panelRows];
            RowHi = new int[panelRows];
            BlockLo = new int[panelRows];
            BlockHi = new int[panelRows];
        }

        SlotRows = panelRows;
        ValueDim = valueDim;
    }

    private static void Grow(ref float[] array, int length)
    {
        if (array.Length < length)
        {
            array = new float[length];
        }
    }

    private static void Grow(ref AlignedFloats buffer, int length)
    {
        if (buffer.Length < length)
        {
            buffer = new AlignedFloats(length);
        }
    }

    /// <summary>
    /// Room for one chunk of packed key columns (<paramref name="length"/> floats), for a panel that
    /// packs its keys as it goes: a few tens of KiB, so the chunk stays in L1 while its tiles read it.
    /// </summary>
    public Span<float> KeyColumns(int length)
    {
        Grow(ref keyColumns, length);
        return keyColumns.AsSpan(0, length);
    }

    /// <summary>Row r of stack slot s: (m, l) index and o offset.</summary>
    public int Index(int slot, int row) => (slot * SlotRows) + row;

    public Span<float> RowO(int slot, int row) => StackO.AsSpan(Index(slot, row) * ValueDim, ValueDim);
}

/// <summary>
/// Zeroed floats whose element 0 sits on a 64-byte boundary, so rows whose length is a multiple of
/// 16 floats start on a cache line and no vector load or store of them is split across two lines.
/// The storage is pinned (the pinned object heap), so the alignment holds for the buffer's lifetime.
/// </summary>
internal sealed class AlignedFloats
{
    public static readonly AlignedFloats Empty = new(0);

    private readonly float[] storage;
    private readonly int start;

    public AlignedFloats(int length)
    {
        storage = GC.AllocateArray<float>(length + 15, pinned: true);
        start = AlignmentPad(storage);
        Length = length;
    }

    public int Length { get; }

    public ref float this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if ((uint)index >= (uint)Length)
            {
                throw new ArgumentOutOfRangeException(nameof(index));
            }

            return ref storage[start + index];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<float> AsSpan(int offset, int length)
    {
        if ((uint)offset > (uint)Length || (uint)length > (uint)(Length - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(offset));
        }

        return storage.AsSpan(start + offset, length);
    }

    /// <summary>Floats to skip from element 0 of <paramref name="array"/> to the next 64-byte boundary (0–15).</summary>
    public static unsafe int AlignmentPad(float[] array)
    {
        fixed (float* first = array)
        {
            return (int)((64 - ((nuint)first & 63)) & 63) / sizeof(float);
        }
    }
}

/// <summary>Fixed shape of the panel and tile loops.</summary>
internal static class PanelKernelShape
{
    /// <summary>
    /// Query rows a panel shares one packed key block across (L2-resident Kt, V, Q): 256 rather than
    /// 128 halves the key and value traffic per FLOP (2% faster at N 8192, d 128, 1 and 2 threads).
    /// </summary>
    public const int PanelRows = 256;

    /// <summary>Query rows of the smaller register tile (4×2 and 4×4; the inspection kernels' tiles).</summary>
    public const int TileRows = 4;

    /// <summary>Query rows of the largest register tile (8×2, with <see cref="WideTiles"/>): the score and probability tiles hold this many rows.</summary>
    public const int MaxTileRows = 8;

    /// <summary>Query rows of the register tile most of a panel runs in with <see cref="WideTiles"/> (6×4).</summary>
    public const int WideTileRows = 6;

    /// <summary>
    /// 6×4, 8×2 and 4×4 register tiles keep 21–29 vectors live: right for 32 vector registers
    /// (AVX-512's EVEX encoding, Arm64), but they spill on x64 without AVX-512, which gets 4×2 tiles
    /// (11 live vectors). Every tile computes each element with the same FMA chain, so the choice
    /// never changes a bit; tests flip it to prove that.
    /// </summary>
    internal static bool WideTiles { get; set; } = !System.Runtime.Intrinsics.X86.X86Base.IsSupported || System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
}

/// <summary>
/// A register tile of a panel against one key block: rows [Row, Row + Rows), the block-local keys
/// [KeyLo, KeyHi) some row sees, and the 16-aligned columns [ColumnLo, ColumnHi) around them.
/// </summary>
internal readonly record struct PanelTile(int Row, int Rows, int KeyLo, int KeyHi)
{
    public int ColumnLo => KeyLo & ~15;

    public int ColumnHi => (KeyHi + 15) & ~15;
}
