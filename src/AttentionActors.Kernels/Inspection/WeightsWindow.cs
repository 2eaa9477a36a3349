namespace AttentionActors.Kernels;

/// <summary>
/// A window of the weights a_ij = e^(s_ij − lse_i) of batch <see cref="Batch"/>: query rows
/// [RowLo, RowHi) × keys [ColLo, ColHi) of query head <see cref="Head"/>, or of the mean over all
/// heads when it is null, pooled (<see cref="Pooling"/>) into <see cref="CellRows"/> ×
/// <see cref="CellCols"/> cells, row-major. Row r of the window falls in cell ⌊r·CellRows / rows⌋,
/// so cell c holds rows [⌈c·rows / CellRows⌉, ⌈(c+1)·rows / CellRows⌉), and likewise for columns.
/// A cell is the max, or the mean, of the head-mean weights of its (i, j): heads summed in float in
/// ascending order, then pooled rows ascending and within a row keys ascending, so its bits depend
/// on the window and its cells only: any split of the window into whole cells gives the same bits.
/// </summary>
public sealed record WeightsWindow(int Batch, int? Head, int RowLo, int RowHi, int ColLo, int ColHi, int CellRows, int CellCols, WeightPooling Pooling)
{
    /// <summary>Most cells a window may have: 64 Mi floats (256 MiB), the most one result is allowed to hold.</summary>
    public const long MaxCells = 64L << 20;

    public int Rows => RowHi - RowLo;

    public int Cols => ColHi - ColLo;

    public long Cells => (long)CellRows * CellCols;

    /// <summary>Query heads whose weights enter a cell: <see cref="Head"/>, or all of them.</summary>
    public int HeadCount(AttentionGeometry geometry) => Head is null ? geometry.Heads : 1;

    /// <summary>The first query head in use.</summary>
    public int FirstHead => Head ?? 0;

    /// <summary>The key heads of the query heads in use: [first, first + count).</summary>
    public (int First, int Count) KvHeads(AttentionGeometry geometry)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        return Head is { } h ? (h / geometry.GroupSize, 1) : (0, geometry.KvHeads);
    }

    /// <summary>First row of cell row <paramref name="c"/> (<see cref="RowHi"/> for c = CellRows).</summary>
    public int CellRowStart(int c) => RowLo + (int)((((long)c * Rows) + CellRows - 1) / CellRows);

    /// <summary>First key of cell column <paramref name="c"/> (<see cref="ColHi"/> for c = CellCols).</summary>
    public int CellColStart(int c) => ColLo + (int)((((long)c * Cols) + CellCols - 1) / CellCols);

    /// <summary>The cell row of query row <paramref name="i"/> in the window.</summary>
    public int CellRowOf(int i) => (int)((long)(i - RowLo) * CellRows / Rows);

    /// <summary>The cell column of key <paramref name="j"/> in the window.</summary>
    public int CellColOf(int j) => (int)((long)(j - ColLo) * CellCols / Cols);

    /// <summary>Why this window does not fit <paramref name="geometry"/>, or null.</summary>
    public string? Invalid(AttentionGeometry geometry)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        if (Batch < 0 || Batch >= geometry.Batch || Head is { } h && (h < 0 || h >= geometry.Heads))
        {
            return $"batch {Batch}, head {Head?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "mean"} is outside [0, {geometry.Batch}) × [0, {geometry.Heads})";
        }

        if (RowLo < 0 || RowHi > geometry.QuerySeq || RowLo >= RowHi || ColLo < 0 || ColHi > geometry.KeySeq || ColLo >= ColHi)
        {
            return $"window rows [{RowLo}, {RowHi}) × keys [{ColLo}, {ColHi}) is empty or outside [0, {geometry.QuerySeq}) × [0, {geometry.KeySeq})";
        }

        if (CellRows < 1 || CellRows > Rows || CellCols < 1 || CellCols > Cols)
        {
            return $"{CellRows} × {CellCols} cells do not fit a window of {Rows} × {Cols}";
        }

        if (Cells > MaxCells)
        {
            return $"{CellRows} × {CellCols} = {Cells:N0} cells are over the {MaxCells:N0} a window may have";
        }

        return Pooling is WeightPooling.Max or WeightPooling.Mean ? null : $"pooling {(int)Pooling} is neither max nor mean";
    }

    /// <summary>
    /// The cells a weights shard owns and the key blocks it needs: cell rows whose first row lies in
    /// [rowStart, rowStart + rowCount) — which must begin and end on cell rows — and cell columns whose
    /// first key lies in blocks [blockStart, blockEnd). The shard carries the keys of blocks
    /// [blockStart, DataEnd): its last cell may reach past blockEnd.
    /// </summary>
    public WeightsCellRange CellsOf(AttentionGeometry geometry, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        int rowEnd = rowStart + rowCount;
        int r0 = rowStart <= RowLo ? 0 : CellRowOf(rowStart), r1 = rowEnd >= RowHi ? CellRows : CellRowOf(rowEnd);
        if (rowStart < RowLo || rowEnd > RowHi || rowCount <= 0 || CellRowStart(r0) != rowStart || CellRowStart(r1) != rowEnd)
        {
            throw new AttentionInputException($"weights rows [{rowStart}, {rowEnd}) are not whole cell rows of the window's rows [{RowLo}, {RowHi}) in {CellRows} cells");
        }

        int c0 = FirstCellFrom(blockStart * geometry.BlockSize), c1 = FirstCellFrom((int)Math.Min((long)blockEnd * geometry.BlockSize, geometry.KeySeq));
        int dataEnd = c1 > c0 ? ((CellColStart(c1) - 1) / geometry.BlockSize) + 1 : blockStart;
        return new WeightsCellRange(r0, r1, c0, Math.Max(c0, c1), Math.Max(dataEnd, blockStart));
    }

    public override string ToString()
        => $"weights of batch {Batch}, {(Head is { } h ? $"head {h}" : "mean over heads")}, rows [{RowLo}, {RowHi}) × keys [{ColLo}, {ColHi}) in {CellRows} × {CellCols} cells ({Pooling.ToString().ToLowerInvariant()})";

    /// <summary>The first cell column whose first key is at or after key <paramref name="j"/>.</summary>
    private int FirstCellFrom(int j)
    {
        if (j <= ColLo)
        {
            return 0;
        }

        if (j >= ColHi)
        {
            return CellCols;
        }

        int c = CellColOf(j);
        return CellColStart(c) >= j ? c : c + 1;
    }
}

/// <summary>Cells [CellRowStart, CellRowEnd) × [CellColStart, CellColEnd) of a <see cref="WeightsWindow"/>, and the key blocks' end their keys need.</summary>
public readonly record struct WeightsCellRange(int CellRowStart, int CellRowEnd, int CellColStart, int CellColEnd, int DataBlockEnd)
{
    public long Count => (long)(CellRowEnd - CellRowStart) * (CellColEnd - CellColStart);
}
