namespace AttentionActors.Kernels.Partials;

/// <summary>
/// Online-softmax partials <c>(m, l, o)</c> of <see cref="Rows"/> query rows for each of a list of
/// canonical tree nodes. Layout: <c>M[node, row]</c>, <c>L[node, row]</c>, <c>O[node, row, ValueDim]</c>.
/// A row whose keys in a node are all masked holds the identity <c>(−∞, 0, ·)</c>; its o is ignored.
/// </summary>
public sealed class PartialSet
{
    public PartialSet(TreeNode[] nodes, int rows, int valueDim)
        : this(nodes, rows, valueDim, new float[nodes.Length * rows], new float[nodes.Length * rows], new float[checked(nodes.Length * rows * valueDim)])
    {
    }

    public PartialSet(TreeNode[] nodes, int rows, int valueDim, float[] m, float[] l, float[] o)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        if (rows < 0 || valueDim < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(rows), $"rows {rows} and value dim {valueDim} must be non-negative");
        }

        if (m.Length != nodes.Length * rows || l.Length != m.Length || o.Length != (long)m.Length * valueDim)
        {
            throw new ArgumentException($"partial arrays do not match {nodes.Length} nodes × {rows} rows × {valueDim} values");
        }

        Nodes = nodes;
        Rows = rows;
        ValueDim = valueDim;
        M = m;
        L = l;
        O = o;
    }

    public TreeNode[] Nodes { get; }

    public int Rows { get; }

    public int ValueDim { get; }

    public float[] M { get; }

    public float[] L { get; }

    public float[] O { get; }

    public Span<float> RowO(int node, int row) => O.AsSpan((node * Rows + row) * ValueDim, ValueDim);
}
