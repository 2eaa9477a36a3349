using System.Runtime.InteropServices;
using AttentionActors.Kernels.Partials;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// A 64-bit FNV-1a digest of a partial set's exact bits (nodes, m, l, o), so an audit compares two
/// computations of a shard without keeping the first one's arrays. Not cryptographic: it catches a
/// machine that computes wrongly, not an adversary.
/// </summary>
internal static class PartialDigest
{
    public static ulong Of(PartialSet set)
    {
        ulong hash = 14695981039346656037UL;
        foreach (var node in set.Nodes)
        {
            hash = Mix(hash, ((ulong)(uint)node.Level << 32) | (uint)node.Index);
        }

        foreach (var values in new[] { set.M, set.L, set.O })
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
