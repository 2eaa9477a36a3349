using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Reference;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>--verify</c>: recomputes single-node (must match bit for bit) and the float64 reference
/// (must be within |out − ref| ≤ 2e-6 + 1e-5·|ref|). The reference covers every row when that costs
/// at most 4 GFLOP, else 256 rows spread over batches, heads and positions.
/// </summary>
internal static class Verifier
{
    private const double FullReferenceFlops = 4e9;
    private const int SampledRows = 256;

    public static int Check(AttentionProblem p, AttentionResult sharded, TextWriter stdout)
    {
        var single = Attention.Compute(p);
        int differing = 0;
        var a = single.Output.Data.Span;
        var b = sharded.Output.Data.Span;
        for (int i = 0; i < a.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]) ? 1 : 0;
        }

        for (int i = 0; i < single.Lse.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(single.Lse[i]) != BitConverter.SingleToInt32Bits(sharded.Lse[i]) ? 1 : 0;
        }

        var rows = Rows(p);
        double maxAbs = 0, maxRel = 0, worstExcess = double.NegativeInfinity;
        var expected = new double[p.ValueDim];
        var scratch = new double[p.KeySeq];
        foreach (var (bi, h, i) in rows)
        {
            double lse = ReferenceAttention.Row(p.Q, p.K, p.V, p.Options, bi, h, i, expected, scratch);
            long row = (((long)bi * p.Heads) + h) * p.QuerySeq + i;
            var actual = b.Slice((int)(row * p.ValueDim), p.ValueDim);
            for (int c = 0; c < p.ValueDim; c++)
            {
                Track(actual[c], expected[c]);
            }

            if (double.IsNegativeInfinity(lse))
            {
                worstExcess = Math.Max(worstExcess, float.IsNegativeInfinity(sharded.Lse[row]) ? 0 : double.PositiveInfinity);
            }
            else
            {
                Track(sharded.Lse[row], lse);
            }
        }

        void Track(double actual, double reference)
        {
            double diff = Math.Abs(actual - reference);
            maxAbs = Math.Max(maxAbs, double.IsNaN(diff) ? double.PositiveInfinity : diff);
            maxRel = Math.Max(maxRel, diff / Math.Max(Math.Abs(reference), 1e-30));
            worstExcess = Math.Max(worstExcess, double.IsNaN(diff) ? double.PositiveInfinity : diff - (2e-6 + (1e-5 * Math.Abs(reference))));
        }

        bool inside = worstExcess <= 0;
        string scope = rows.Count == (long)p.Batch * p.Heads * p.QuerySeq ? $"all {rows.Count} rows" : $"{rows.Count} sampled rows";
        stdout.WriteLine($"verify: sharded == single-node bit for bit: {(differing == 0 ? "yes" : $"NO ({differing} values differ)")}");
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"verify: float64 reference on {scope}: max |out − ref| = {maxAbs:G3}, max relative = {maxRel:G3}; {(inside ? "within" : "OUTSIDE")} the contract |out − ref| ≤ 2e-6 + 1e-5·|ref|"));
        return differing == 0 && inside ? 0 : 1;
    }

    private static List<(int B, int H, int I)> Rows(AttentionProblem p)
    {
        long total = (long)p.Batch * p.Heads * p.QuerySeq;
        var rows = new List<(int, int, int)>();
        if (2.0 * total * p.KeySeq * (p.KeyDim + p.ValueDim) <= FullReferenceFlops)
        {
            for (int b = 0; b < p.Batch; b++)
            {
                for (int h = 0; h < p.Heads; h++)
                {
                    for (int i = 0; i < p.QuerySeq; i++)
                    {
                        rows.Add((b, h, i));
                    }
                }
            }

            return rows;
        }

        var rng = new Random(1);
        for (int s = 0; s < SampledRows; s++)
        {
            int i = s == 0 ? 0 : s == 1 ? p.QuerySeq - 1 : rng.Next(p.QuerySeq);
            rows.Add((rng.Next(p.Batch), rng.Next(p.Heads), i));
        }

        return rows;
    }
}
