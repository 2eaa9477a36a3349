using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention bench --decode`: checks every configuration against float64 before timing it (exit 1 if outside the contract).</summary>
public sealed class DecodeBenchTests
{
    [Fact]
    public async Task A_small_decoding_bench_checks_and_times_every_configuration()
    {
        var (code, _, _) = await Run("bench", "--decode", "--seq", "1000", "--dim", "16", "--heads", "4", "--kv-heads", "2", "--query-rows", "1", "3", "--threads", "1", "2", "--repeat", "1", "--block", "64");
        Assert.Equal(0, code);
    }

    [Theory]
    [InlineData("--heads", "6", "--kv-heads", "4")]
    [InlineData("--query-rows", "0")]
    [InlineData("--seq", "-5")]
    [InlineData("--threads", "0")]
    public async Task Bad_decoding_shapes_exit_2(params string[] args)
    {
        var (code, _, _) = await Run(["bench", "--decode", "--seq", "1000", "--dim", "16", "--heads", "4", "--kv-heads", "2", .. args]);
        Assert.Equal(2, code);
    }
}
