using AttentionActors.Kernels;
using AttentionActors.Kernels.Reference;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// Compares computed rows with the float64 reference under the accuracy contract
/// |out − ref| ≤ 2e-6 + 1e-5·|ref| (outputs and log-sum-exp). Used by <c>bench</c> and <c>--verify</c>.
/// </summary>
internal static class ReferenceCheck
{
    /// <param name="Rows">Rows compared.</param>
    /// <param name="AllRows">Whether those are every row of the problem.</param>
    /// <param name="MaxAbs">Largest |out − ref|.</param>
    /// <param name="MaxRel">Largest |out − ref| / |ref|.</param>
    /// <param name="WorstRatio">Largest |out − ref| / (2e-6 + 1e-5·|ref|): ≤ 1 is inside the contract.</param>
    public sealed record Outcome(int Rows, bool AllRows, double MaxAbs, double MaxRel, double WorstRatio)
    {
        public bool Inside => WorstRatio <= 1;
    }

    /// <summary>
    /// Every row when the reference costs at most <paramref name="fullFlops"/>, else
    /// <paramref name="sampled"/> rows (the first, the last, and random ones) spread over batches and heads.
    /// </summary>
    public static List<(int B, int H, int I)> Rows(AttentionProblem p, int sampled, double fullFlops)
    {
        long total = (long)p.Batch * p.Heads * p.QuerySeq;
        var rows = new List<(int, int, int)>();
        if (2.0 * total * p.KeySeq * (p.KeyDim + p.ValueDim) <= fullFlops)
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
        for (int s = 0; s < sampled && p.QuerySeq > 0; s++)
        {
            int i = s == 0 ? 0 : s == 1 ? p.QuerySeq - 1 : rng.Next(p.QuerySeq);
            rows.Add((rng.Next(p.Batch), rng.Next(p.Heads), i));
        }

        return rows;
    }

    public static Outcome Compare(AttentionProblem p, AttentionResult result, IReadOnlyList<(int B, int H, int I)> rows)
    {
        double maxAbs = 0, maxRel = 0, worst = 0;
        var expected = new double[p.ValueDim];
        var scratch = new double[p.KeySeq];
        var output = result.Output.Data.Span;
        foreach (var (b, h, i) in rows)
        {
            double lse = ReferenceAttention.Row(p.Q, p.K, p.V, p.Options, b, h, i, expected, scratch, p.Mask);
            long row = ((((long)b * p.Heads) + h) * p.QuerySeq) + i;
            var actual = output.Slice((int)(row * p.ValueDim), p.ValueDim);
            for (int c = 0; c < p.ValueDim; c++)
            {
                Track(actual[c], expected[c]);
            }

            if (double.IsNegativeInfinity(lse))
            {
                worst = float.IsNegativeInfinity(result.Lse[row]) ? worst : double.PositiveInfinity;
            }
            else
            {
                Track(result.Lse[row], lse);
            }
        }

        return new Outcome(rows.Count, rows.Count == (long)p.Batch * p.Heads * p.QuerySeq, maxAbs, maxRel, worst);

        void Track(double actual, double reference)
        {
            double diff = Math.Abs(actual - reference);
            if (double.IsNaN(diff))
            {
                diff = double.PositiveInfinity;
            }

            maxAbs = Math.Max(maxAbs, diff);
            maxRel = Math.Max(maxRel, diff / Math.Max(Math.Abs(reference), 1e-30));
            worst = Math.Max(worst, diff / (2e-6 + (1e-5 * Math.Abs(reference))));
        }
    }
}
