using AttentionActors.Cli.Commands;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Tests;

/// <summary>The float64 check of <c>--verify</c> and <c>bench</c>: which rows it compares, and what it reports.</summary>
public sealed class ReferenceCheckTests
{
    private static AttentionProblem Problem(int heads, int rows, int keys)
    {
        AttentionTensor Make(string name, int h, int n, int stream)
        {
            var data = new float[h * n * 16];
            UniformFill.Fill(data, 7, stream, 1f);
            return AttentionTensor.FromArray(name, data, 1, h, n, 16);
        }

        return AttentionProblem.Create(Make("Q", heads, rows, 0), Make("K", 2, keys, 1), Make("V", 2, keys, 2), new AttentionOptions());
    }

    [Fact]
    public void A_problem_with_fewer_rows_than_the_sample_is_checked_row_by_row_once()
    {
        // 32 rows, a sample of 256 and a reference too costly for a full check: each row once.
        var p = Problem(heads: 32, rows: 1, keys: 64);
        var rows = ReferenceCheck.Rows(p, sampled: 256, fullFlops: 0);
        Assert.Equal(32, rows.Count);
        Assert.Equal(32, rows.Distinct().Count());

        var outcome = ReferenceCheck.Compare(p, Attention.Compute(p), rows);
        Assert.True(outcome.AllRows);
        Assert.True(outcome.Inside, $"worst {outcome.WorstRatio} of the tolerance, max |out − ref| {outcome.MaxAbs}");
    }

    [Fact]
    public void A_sample_draws_distinct_rows_including_the_first_and_last()
    {
        var p = Problem(heads: 4, rows: 80, keys: 64);
        var rows = ReferenceCheck.Rows(p, sampled: 256, fullFlops: 0);
        Assert.Equal(256, rows.Count);
        Assert.Equal(256, rows.Distinct().Count());
        Assert.Contains(rows, r => r.I == 0);
        Assert.Contains(rows, r => r.I == 79);
        Assert.False(ReferenceCheck.Compare(p, Attention.Compute(p), rows).AllRows);
    }

    [Fact]
    public void A_wrong_row_is_reported_whichever_thread_checks_it()
    {
        var p = Problem(heads: 4, rows: 80, keys: 64);
        var result = Attention.Compute(p);
        var span = result.Output.Data.Span;
        span[(((3 * 80) + 79) * 16) + 5] += 0.01f; // head 3, the last row, column 5
        var outcome = ReferenceCheck.Compare(p, result, ReferenceCheck.Rows(p, sampled: 320, fullFlops: 0));
        Assert.False(outcome.Inside);
        Assert.InRange(outcome.MaxAbs, 0.0099, 0.0101);
    }
}
