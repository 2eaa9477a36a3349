namespace AttentionActors.Kernels.Partials;

/// <summary>
/// Builds the canonical tree bottom-up from aligned subtrees that arrive left to right: a pushed
/// node is merged with its left sibling whenever both are here, as the tree's own evaluation merges
/// them (left ⊕ right), so the stack never holds more than one node per level. After the last push
/// it holds the maximal aligned subtrees of the range pushed — the nodes a shard of that range
/// returns — with the same bits as computing the range in one piece.
/// </summary>
public sealed class TreeStack
{
    private readonly List<PartialSet> stack = [];

    /// <summary>Nodes on the stack, left to right.</summary>
    public int Count => stack.Count;

    /// <summary>
    /// Pushes one aligned subtree's partials (a set of exactly one node, starting where the last one
    /// ended); its arrays are merged into and must not be used by the caller afterwards.
    /// </summary>
    public void Push(PartialSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        if (set.Nodes.Length != 1)
        {
            throw new ArgumentException($"a tree stack takes one node at a time, not {set.Nodes.Length}", nameof(set));
        }

        if (stack.Count > 0 && (stack[^1].Nodes[0].End != set.Nodes[0].Start || stack[^1].Rows != set.Rows || stack[^1].ValueDim != set.ValueDim))
        {
            throw new ArgumentException($"{set.Nodes[0]} does not follow {stack[^1].Nodes[0]} with the same rows and width", nameof(set));
        }

        while (stack.Count > 0 && stack[^1].Nodes[0] is var left && set.Nodes[0] is var right
            && left.Level == right.Level && left.Index % 2 == 0 && right.Index == left.Index + 1)
        {
            var into = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            int width = into.ValueDim;
            for (int r = 0; r < into.Rows; r++)
            {
                PartialMath.MergeInto(ref into.M[r], ref into.L[r], into.O.AsSpan(r * width, width), set.M[r], set.L[r], set.O.AsSpan(r * width, width));
            }

            set = new PartialSet([new TreeNode(left.Level + 1, left.Index / 2)], into.Rows, width, into.M, into.L, into.O);
        }

        stack.Add(set);
    }

    /// <summary>The stack's nodes as one set, left to right.</summary>
    public PartialSet ToSet()
    {
        if (stack.Count == 1)
        {
            return stack[0];
        }

        if (stack.Count == 0)
        {
            throw new InvalidOperationException("nothing was pushed");
        }

        int rows = stack[0].Rows, width = stack[0].ValueDim;
        var set = new PartialSet([.. stack.Select(s => s.Nodes[0])], rows, width);
        for (int n = 0; n < stack.Count; n++)
        {
            stack[n].M.CopyTo(set.M, n * rows);
            stack[n].L.CopyTo(set.L, n * rows);
            stack[n].O.CopyTo(set.O, n * rows * width);
        }

        return set;
    }
}
