using System.Runtime.InteropServices;
using AttentionActors.Kernels.Partials;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// A 64-bit FNV-1a digest of a partial set's exact bits (nodes, m, l, o) or a coverage shard's (nodes, sums), so an audit compares two
/// computations of a shard without keeping the first one's arrays. Not cryptographic: it catches a
/// machine that computes wrongly, not an adversary.
/// </summary>
internal static class PartialDigest
{
    public static ulong Of(PartialSet set) => Of(set.Nodes, set.M, set.L, set.O);

    /// <summary>The digest of a coverage shard's subtrees (nodes and sums).</summary>
    public static ulong Of(CoverageParts parts) => Of(parts.Nodes, parts.Values);

    /// <summary>The digest of a weights shard's cells.</summary>
    public static ulong Of(Kernels.WeightsCells cells) => Of([], cells.Values);

    private static ulong Of(TreeNode[] nodes, params float[][] arrays)
    {
        ulong hash = 14695981039346656037UL;
        foreach (var node in nodes)
        {
            hash = Mix(hash, ((ulong)(uint)node.Level << 32) | (uint)node.Index);
        }

        foreach (var values in arrays)
        {
            foreach (ulong word in MemoryMarshal.Cast<float, ulong>(values.AsSpan(0, values.Length & ~1)))
            {
                hash = Mix(hash, word);
            }

            if ((values.Length & 1) == 1)
            {
                hash = Mix(hash, (uint)BitConverter.SingleToInt32Bits(values[^1]));
            }
        }

        return hash;
    }

    private static ulong Mix(ulong hash, ulong word) => (hash ^ word) * 1099511628211UL;
}
