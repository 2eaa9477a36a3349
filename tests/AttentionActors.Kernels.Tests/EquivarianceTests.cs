using AttentionActors.Kernels.Reference;

namespace AttentionActors.Kernels.Tests;

/// <summary>Without masks attention is permutation-equivariant in the queries and invariant in the keys.</summary>
public class EquivarianceTests
{
    private static AttentionTensor PermuteRows(AttentionTensor t, int[] perm)
    {
        var src = t.Data.Span;
        var dst = new float[src.Length];
        for (int bh = 0; bh < t.Batch * t.Heads; bh++)
        {
            for (int i = 0; i < t.Seq; i++)
            {
                src.Slice(((bh * t.Seq) + perm[i]) * t.Dim, t.Dim).CopyTo(dst.AsSpan(((bh * t.Seq) + i) * t.Dim, t.Dim));
            }
        }

        return AttentionTensor.FromArray(t.Name, dst, t.Batch, t.Heads, t.Seq, t.Dim);
    }

    [Fact]
    public void Permuting_queries_permutes_output_rows_exactly()
    {
        var (q, k, v) = TestData.Qkv(21, 2, 3, 3, 389, 611, 32, 16);
        var rng = new Random(3);
        int[] perm = [.. Enumerable.Range(0, 389).OrderBy(_ => rng.Next())];
        var baseline = Attention.Compute(q, k, v);
        var permuted = Attention.Compute(PermuteRows(q, perm), k, v);
        TestData.AssertBitwise(PermuteRows(baseline.Output, perm).Data.Span, permuted.Output.Data.Span, "out(Pq) vs P·out(q)");
    }

    [Fact]
    public void Permuting_keys_and_values_together_changes_output_only_within_the_contract()
    {
        var (q, k, v) = TestData.Qkv(22, 1, 2, 2, 300, 517, 24, 24);
        var rng = new Random(4);
        var perm = Enumerable.Range(0, 517).OrderBy(_ => rng.Next()).ToArray();
        var options = new AttentionOptions { BlockSize = 32 };
        var reference = ReferenceAttention.Compute(q, k, v, options);
        var permuted = Attention.Compute(q, PermuteRows(k, perm), PermuteRows(v, perm), options);
        TestData.AssertWithinContract(permuted, reference, "keys permuted");
    }
}
