namespace AttentionActors.Kernels.Partials;

/// <summary>
/// Coverage sums of some subtrees of the coverage tree (<see cref="Inspection.CoverageLeaves"/>):
/// row n holds node <c>Nodes[n]</c>'s sums c_j over <see cref="Keys"/> keys, <c>Values [Nodes, Keys]</c>.
/// Subtrees of disjoint leaf ranges fold in the canonical tree, so the root's bits do not depend on
/// how the leaves were split.
/// </summary>
public sealed class CoverageParts
{
    public CoverageParts(TreeNode[] nodes, int keys)
        : this(nodes, keys, new float[(long)nodes.Length * keys])
    {
    }

    public CoverageParts(TreeNode[] nodes, int keys, float[] values)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(values);
        // The values may run on past the nodes' rows: room a fold uses while it builds them.
        if (keys < 0 || values.LongLength < (long)nodes.Length * keys)
        {
            throw new ArgumentException($"coverage parts of {nodes.Length} nodes × {keys} keys need {(long)nodes.Length * keys} values, not {values.LongLength}", nameof(values));
        }

        Nodes = nodes;
        Keys = keys;
        Values = values;
    }

    public TreeNode[] Nodes { get; }

    public int Keys { get; }

    public float[] Values { get; }

    public Span<float> Row(int node) => Values.AsSpan(node * Keys, Keys);

    /// <summary>
    /// The root of the tree over <paramref name="leafCount"/> leaves from these nodes (sorted,
    /// disjoint): sums folded left += right in tree order, into the first node's row. Zeros when
    /// there is no node.
    /// </summary>
    public ReadOnlySpan<float> Root(int leafCount)
    {
        int root = CanonicalTree.Evaluate(leafCount, Nodes, (a, b) =>
        {
            var left = Row(a);
            var right = Row(b);
            for (int j = 0; j < left.Length; j++)
            {
                left[j] += right[j];
            }

            return a;
        });
        return root < 0 ? new float[Keys] : Row(root);
    }

    /// <summary>All the parts' nodes in one set, sorted by leaf, each row copied.</summary>
    public static CoverageParts Combine(IReadOnlyList<CoverageParts> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        int keys = parts.Count == 0 ? 0 : parts[0].Keys;
        var rows = parts.SelectMany(p => p.Nodes.Select((node, n) => (Node: node, Part: p, Index: n))).OrderBy(r => r.Node.Start).ToList();
        var combined = new CoverageParts([.. rows.Select(r => r.Node)], keys);
        for (int n = 0; n < rows.Count; n++)
        {
            rows[n].Part.Row(rows[n].Index).CopyTo(combined.Row(n));
        }

        return combined;
    }
}
