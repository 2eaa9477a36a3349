using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention bench --decode`: checks every configuration against float64 before timing it (exit 1 if outside the contract), with K and V as tensors and from a key/value cache, on the kernel and on the embedded pipeline (exit 1 if any bits differ).</summary>
public sealed class DecodeBenchTests
{
    [Fact]
    public async Task A_small_decoding_bench_checks_and_times_every_configuration()
    {
        var (code, stdout, stderr) = await Run("bench", "--decode", "--seq", "1000", "--dim", "16", "--heads", "4", "--kv-heads", "2", "--query-rows", "1", "3", "--threads", "1", "2", "--repeat", "1", "--block", "64");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains(" cores, ", stdout, StringComparison.Ordinal);
        var (header, rows) = BenchTable.Parse(stdout);

        // Each of the 4 configurations four times: K and V as tensors, then from a key/value cache, on the kernel and then on the embedded pipeline.
        int from = BenchTable.Column(header, "K/V from"), on = BenchTable.Column(header, "on");
        string[] ways = ["tensors kernel", "cache kernel", "tensors pipeline", "cache pipeline"];
        Assert.Equal(Enumerable.Repeat(ways, 4).SelectMany(way => way), rows.Select(row => $"{row[from]} {row[on]}"));
        int ofPeak = BenchTable.Column(header, "of peak"), ofMemory = BenchTable.Column(header, "K/V of memory"), error = BenchTable.Column(header, "max err/tol");
        Assert.True(ofPeak > BenchTable.Column(header, "GFLOP/s"), $"'of peak' does not follow GFLOP/s in: {string.Join(" | ", header)}");
        Assert.All(rows, row =>
        {
            Assert.EndsWith("%", row[ofPeak], StringComparison.Ordinal);
            Assert.EndsWith("%", row[ofMemory], StringComparison.Ordinal);
            double worst = double.Parse(row[error], System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(worst is > 0 and <= 1, $"max err/tol '{row[error]}' in: {string.Join(" | ", row)}");
        });
    }

    [Theory]
    [InlineData("--heads", "6", "--kv-heads", "4")]
    [InlineData("--query-rows", "0")]
    [InlineData("--seq", "-5")]
    [InlineData("--threads", "0")]
    public async Task Bad_decoding_shapes_exit_2(params string[] args)
    {
        // The case's options replace the small shape's, so the refusal is the bench's own check, not a repeated option.
        string[] shape = ["--seq", "1000", "--dim", "16", "--heads", "4", "--kv-heads", "2"];
        var kept = shape.Chunk(2).Where(pair => !args.Contains(pair[0])).SelectMany(pair => pair);
        var (code, _, stderr) = await Run(["bench", "--decode", .. kept, .. args]);
        Assert.Equal(2, code);
        Assert.Contains($"bench: {args[0]} {args[1]}", stderr, StringComparison.Ordinal);
    }
}
