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

    [Theory]
    [InlineData(32, 1, 32, true)] // a decoding step of 32 rows, a reference too costly to run whole: each row once
    [InlineData(4, 80, 256, false)] // 320 rows: 256 distinct ones
    public void The_check_compares_distinct_rows_and_every_row_when_there_are_fewer_than_the_sample(int heads, int queries, int expected, bool all)
    {
        var p = Problem(heads, queries, keys: 64);
        var rows = ReferenceCheck.Rows(p, sampled: 256, fullFlops: 0);
        Assert.Equal(expected, rows.Count);
        Assert.Equal(expected, rows.Distinct().Count());
        Assert.Contains(rows, r => r.I == 0);
        Assert.Contains(rows, r => r.I == queries - 1);

        var outcome = ReferenceCheck.Compare(p, Attention.Compute(p), rows);
        Assert.Equal(all, outcome.AllRows);
        Assert.True(outcome.Inside, $"worst {outcome.WorstRatio} of the tolerance, max |out − ref| {outcome.MaxAbs}");
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
