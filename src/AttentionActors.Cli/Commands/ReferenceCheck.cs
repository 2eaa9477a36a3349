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
    /// Every row when the reference costs at most <paramref name="fullFlops"/> or the problem has no
    /// more than <paramref name="sampled"/> rows, else <paramref name="sampled"/> distinct rows (the
    /// first, the last, and random ones) spread over batches and heads.
    /// </summary>
    public static List<(int B, int H, int I)> Rows(AttentionProblem p, int sampled, double fullFlops)
    {
        long total = (long)p.Batch * p.Heads * p.QuerySeq;
        var rows = new List<(int, int, int)>();
        if (total <= sampled || 2.0 * total * p.KeySeq * (p.KeyDim + p.ValueDim) <= fullFlops)
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

        // Distinct: with fewer rows than the sample, drawing with repeats checked each row several
        // times over (a decoding step of 32 rows against a million keys, 256 draws: a minute).
        var drawn = new HashSet<(int, int, int)>();
        var rng = new Random(1);
        for (int s = 0; rows.Count < sampled; s++)
        {
            int i = s == 0 ? 0 : s == 1 ? p.QuerySeq - 1 : rng.Next(p.QuerySeq);
            var row = (rng.Next(p.Batch), rng.Next(p.Heads), i);
            if (drawn.Add(row))
            {
                rows.Add(row);
            }
        }

        return rows;
    }

    /// <summary>The rows' reference, computed in parallel (each row on its own; the worst differences do not depend on the order).</summary>
    public static Outcome Compare(AttentionProblem p, AttentionResult result, IReadOnlyList<(int B, int H, int I)> rows)
    {
        var worst = new Worst();
        var gate = new object();
        Parallel.For(
            0,
            rows.Count,
            () => (Worst: new Worst(), Expected: new double[p.ValueDim], Scratch: new double[p.KeySeq]),
            (n, _, local) =>
            {
                var (b, h, i) = rows[n];
                double lse = ReferenceAttention.Row(p.Q, p.K, p.V, p.Options, b, h, i, local.Expected, local.Scratch, p.Mask);
                long row = ((((long)b * p.Heads) + h) * p.QuerySeq) + i;
                var actual = result.Output.Data.Span.Slice((int)(row * p.ValueDim), p.ValueDim);
                for (int c = 0; c < p.ValueDim; c++)
                {
                    local.Worst.Track(actual[c], local.Expected[c]);
                }

                if (double.IsNegativeInfinity(lse))
                {
                    local.Worst.Ratio = float.IsNegativeInfinity(result.Lse[row]) ? local.Worst.Ratio : double.PositiveInfinity;
                }
                else
                {
                    local.Worst.Track(result.Lse[row], lse);
                }

                return local;
            },
            local =>
            {
                lock (gate)
                {
                    worst.Add(local.Worst);
                }
            });

        return new Outcome(rows.Count, rows.Count == (long)p.Batch * p.Heads * p.QuerySeq, worst.Abs, worst.Rel, worst.Ratio);
    }

    private sealed class Worst
    {
        public double Abs { get; private set; }

        public double Rel { get; private set; }

        public double Ratio { get; set; }

        public void Track(double actual, double reference)
        {
            double diff = Math.Abs(actual - reference);
            if (double.IsNaN(diff))
            {
                diff = double.PositiveInfinity;
            }

            Abs = Math.Max(Abs, diff);
            Rel = Math.Max(Rel, diff / Math.Max(Math.Abs(reference), 1e-30));
            Ratio = Math.Max(Ratio, diff / (2e-6 + (1e-5 * Math.Abs(reference))));
        }

        public void Add(Worst other)
        {
            Abs = Math.Max(Abs, other.Abs);
            Rel = Math.Max(Rel, other.Rel);
            Ratio = Math.Max(Ratio, other.Ratio);
        }
    }
}
