using System.Numerics;

namespace AttentionActors.Kernels.Partials;

/// <summary>
/// The canonical merge tree over key blocks 0..n−1: the perfect binary tree of height ⌈log₂ n⌉
/// whose missing leaves are the identity. Its root is the same bits however the blocks were
/// partitioned into shards and in whatever order the partials arrived.
/// </summary>
public static class CanonicalTree
{
    /// <summary>⌈log₂ n⌉, the height of the tree over <paramref name="blockCount"/> blocks.</summary>
    public static int Height(int blockCount) => blockCount <= 1 ? 0 : 32 - BitOperations.LeadingZeroCount((uint)(blockCount - 1));

    /// <summary>The maximal aligned subtrees inside <c>[blockStart, blockEnd)</c>, left to right.</summary>
    public static TreeNode[] Decompose(int blockStart, int blockEnd)
    {
        if (blockStart < 0 || blockEnd < blockStart)
        {
            throw new ArgumentOutOfRangeException(nameof(blockStart), $"block range [{blockStart}, {blockEnd}) is not a range");
        }

        var nodes = new List<TreeNode>();
        long p = blockStart;
        while (p < blockEnd)
        {
            int level = p == 0 ? 31 : BitOperations.TrailingZeroCount(p);
            while (p + (1L << level) > blockEnd)
            {
                level--;
            }

            nodes.Add(new TreeNode(level, (int)(p >> level)));
            p += 1L << level;
        }

        return [.. nodes];
    }

    /// <summary>
    /// Evaluates the tree over <paramref name="blockCount"/> blocks from disjoint <paramref name="nodes"/>
    /// sorted by start. <paramref name="merge"/>(a, b) folds item b into item a (a is left of b);
    /// returns the item holding the root, or −1 when every block is absent (the identity).
    /// </summary>
    public static int Evaluate(int blockCount, ReadOnlySpan<TreeNode> nodes, Func<int, int, int> merge)
    {
        ArgumentNullException.ThrowIfNull(merge);
        int height = Height(blockCount);
        for (int i = 0; i < nodes.Length; i++)
        {
            var node = nodes[i];
            if (node.Level < 0 || node.Level > height || node.Index < 0 || node.End > Math.Max(1L << height, blockCount))
            {
                throw new ArgumentException($"tree node {node} (level {node.Level}) is outside the tree over {blockCount} blocks");
            }

            if (i > 0 && nodes[i - 1].End > node.Start)
            {
                throw new ArgumentException($"tree nodes {nodes[i - 1]} and {node} overlap or are out of order");
            }
        }

        return Evaluate(height, 0, nodes, 0, nodes.Length, merge);
    }

    private static int Evaluate(int level, int index, ReadOnlySpan<TreeNode> nodes, int lo, int hi, Func<int, int, int> merge)
    {
        if (lo == hi)
        {
            return -1;
        }

        if (hi - lo == 1 && nodes[lo] == new TreeNode(level, index))
        {
            return lo;
        }

        if (level == 0)
        {
            throw new ArgumentException($"tree node {nodes[lo]} does not fit leaf {index}");
        }

        // Nodes are disjoint, aligned and inside this node, so none equal to it can have company.
        long mid = ((2L * index) + 1) << (level - 1);
        int split = lo;
        while (split < hi && nodes[split].Start < mid)
        {
            split++;
        }

        int left = Evaluate(level - 1, 2 * index, nodes, lo, split, merge);
        int right = Evaluate(level - 1, (2 * index) + 1, nodes, split, hi, merge);
        return left < 0 ? right : right < 0 ? left : merge(left, right);
    }

    /// <summary>
    /// Reduces partial sets that cover disjoint block ranges of the same query rows into the root,
    /// as one set holding a single node. Arrival order does not matter. A set may already hold the
    /// root (a shard that held every block its rows see); any other set is then the identity for
    /// those rows, and merging the identity changes no bit, so the root is taken as it is.
    /// </summary>
    public static PartialSet Reduce(int blockCount, IReadOnlyList<PartialSet> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        var top = new TreeNode(Height(blockCount), 0);
        if (parts.Count > 1 && parts.Any(p => p.Nodes.Contains(top)))
        {
            return TakeRoots(top, parts);
        }

        return ReduceTree(blockCount, parts);
    }

    /// <summary>Each row's one non-identity entry among sets one of which holds the root; two for one row overlap, and are refused.</summary>
    private static PartialSet TakeRoots(TreeNode top, IReadOnlyList<PartialSet> parts)
    {
        int rows = parts[0].Rows, dv = parts[0].ValueDim;
        var root = new PartialSet([top], rows, dv);
        Array.Fill(root.M, float.NegativeInfinity);
        for (int r = 0; r < rows; r++)
        {
            (PartialSet Set, int Node)? found = null;
            foreach (var part in parts)
            {
                if (part.Rows != rows || part.ValueDim != dv)
                {
                    throw new ArgumentException($"partials disagree on shape: {part.Rows}×{part.ValueDim} vs {rows}×{dv}");
                }

                for (int n = 0; n < part.Nodes.Length; n++)
                {
                    if (float.IsNegativeInfinity(part.M[(n * rows) + r]))
                    {
                        continue;
                    }

                    if (found is { } other)
                    {
                        throw new ArgumentException($"row {r}: tree nodes {other.Set.Nodes[other.Node]} and {part.Nodes[n]} both hold keys of the row, and one of them is the root");
                    }

                    found = (part, n);
                }
            }

            if (found is var (set, node))
            {
                int at = (node * rows) + r;
                root.M[r] = set.M[at];
                root.L[r] = set.L[at];
                set.O.AsSpan(at * dv, dv).CopyTo(root.O.AsSpan(r * dv, dv));
            }
        }

        return root;
    }

    private static PartialSet ReduceTree(int blockCount, IReadOnlyList<PartialSet> parts)
    {
        if (parts.Count == 0)
        {
            throw new ArgumentException("no partials to reduce");
        }

        int rows = parts[0].Rows;
        int dv = parts[0].ValueDim;
        var items = new List<(TreeNode Node, PartialSet Set, int Index)>();
        foreach (var part in parts)
        {
            if (part.Rows != rows || part.ValueDim != dv)
            {
                throw new ArgumentException($"partials disagree on shape: {part.Rows}×{part.ValueDim} vs {rows}×{dv}");
            }

            for (int n = 0; n < part.Nodes.Length; n++)
            {
                items.Add((part.Nodes[n], part, n));
            }
        }

        // One node in all: nothing merges, so its arrays can serve as the root without a copy.
        if (items.Count == 1 && items[0].Set.Nodes.Length == 1)
        {
            var only = items[0].Set;
            return new PartialSet([new TreeNode(Height(blockCount), 0)], rows, dv, only.M, only.L, only.O);
        }

        items.Sort((a, b) => a.Node.Start.CompareTo(b.Node.Start));
        var nodes = items.Select(x => x.Node).ToArray();

        // The inputs stay intact (a duplicate delivery may still reference them): an item is copied
        // only when something is merged into it, so the right-hand side of each merge is read in place.
        var m = new float[items.Count][];
        var l = new float[items.Count][];
        var o = new float[items.Count][];
        void Own(int i)
        {
            if (m[i] is null)
            {
                var (_, set, n) = items[i];
                m[i] = set.M.AsSpan(n * rows, rows).ToArray();
                l[i] = set.L.AsSpan(n * rows, rows).ToArray();
                o[i] = set.O.AsSpan(n * rows * dv, rows * dv).ToArray();
            }
        }

        int root = Evaluate(blockCount, nodes, (a, b) =>
        {
            Own(a);
            var (_, right, j) = items[b];
            bool owned = m[b] is not null;
            var (mb, lb, ob, at) = owned ? (m[b], l[b], o[b], 0) : (right.M, right.L, right.O, j * rows);
            for (int r = 0; r < rows; r++)
            {
                PartialMath.MergeInto(ref m[a][r], ref l[a][r], o[a].AsSpan(r * dv, dv), mb[at + r], lb[at + r], ob.AsSpan((at + r) * dv, dv));
            }

            return a;
        });

        var rootNode = new TreeNode(Height(blockCount), 0);
        if (root < 0)
        {
            var empty = new PartialSet([rootNode], rows, dv);
            Array.Fill(empty.M, float.NegativeInfinity);
            return empty;
        }

        Own(root);
        return new PartialSet([rootNode], rows, dv, m[root], l[root], o[root]);
    }

    /// <summary>Finalizes every row of a single-node set into <paramref name="output"/> [rows, dv] and <paramref name="lse"/> [rows].</summary>
    public static void Finalize(PartialSet root, Span<float> output, Span<float> lse)
    {
        ArgumentNullException.ThrowIfNull(root);
        int dv = root.ValueDim;
        for (int r = 0; r < root.Rows; r++)
        {
            PartialMath.Finalize(root.M[r], root.L[r], root.O.AsSpan(r * dv, dv), output.Slice(r * dv, dv), out lse[r]);
        }
    }
}
