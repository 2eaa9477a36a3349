using System.Globalization;
using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention bench` (the kernel grid) and `bench --projection`: small configurations, checked and timed, with the table every figure goes in.</summary>
public sealed class BenchTests
{
    [Fact]
    public async Task A_small_kernel_bench_names_the_cpu_and_gives_each_figure_its_fraction_of_the_peak()
    {
        var (code, stdout, stderr) = await Run("bench", "--seq", "256", "--dim", "16", "--heads", "2", "--threads", "1", "2", "--repeat", "1", "--causal");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains(" cores, ", stdout, StringComparison.Ordinal);

        // The CPU is named with its first-level data cache where sysfs gives it (what decoding speed turned on).
        string l1 = "/sys/devices/system/cpu/cpu0/cache/index0";
        if (File.Exists(Path.Combine(l1, "size")) && File.ReadAllText(Path.Combine(l1, "type")).Trim() == "Data")
        {
            string kib = File.ReadAllText(Path.Combine(l1, "size")).Trim().TrimEnd('K');
            Assert.Contains($"L1d {kib} KiB", stdout.Split('\n')[0], StringComparison.Ordinal);
        }

        var (header, rows) = BenchTable.Parse(stdout);
        Assert.Equal(2, rows.Count);
        int ofPeak = BenchTable.Column(header, "of peak"), gflops = BenchTable.Column(header, "GFLOP/s"), causal = BenchTable.Column(header, "causal/dense");
        Assert.All(rows, row =>
        {
            Assert.True(double.Parse(row[gflops], CultureInfo.InvariantCulture) > 0, $"GFLOP/s '{row[gflops]}'");
            Assert.EndsWith("%", row[ofPeak], StringComparison.Ordinal);
            Assert.True(double.Parse(row[causal], CultureInfo.InvariantCulture) > 0, $"causal/dense '{row[causal]}'");
        });
    }

    [Fact]
    public async Task A_small_projection_bench_puts_numpy_beside_each_figure_when_it_is_there()
    {
        var (code, stdout, stderr) = await Run("bench", "--projection", "--seq", "64", "--dim", "32", "--threads", "1", "--repeat", "1");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        var (header, rows) = BenchTable.Parse(stdout);
        var row = Assert.Single(rows);
        Assert.EndsWith("%", row[BenchTable.Column(header, "of FMA peak")], StringComparison.Ordinal);
        if (stdout.Contains("NumPy not found", StringComparison.Ordinal))
        {
            Assert.DoesNotContain("NumPy GFLOP/s", header);
        }
        else
        {
            Assert.True(double.Parse(row[BenchTable.Column(header, "NumPy GFLOP/s")], CultureInfo.InvariantCulture) > 0, string.Join(" | ", row));
            Assert.True(double.Parse(row[BenchTable.Column(header, "ours / NumPy")], CultureInfo.InvariantCulture) > 0, string.Join(" | ", row));

            // The peer is named by the library NumPy loaded, and called OpenBLAS only when it is.
            string first = stdout.Split('\n')[0];
            var named = System.Text.RegularExpressions.Regex.Match(first, @"x @ W\.T on (OpenBLAS SGEMM \()?(?<library>/[^;,]+)[;,]");
            Assert.True(named.Success, first);
            Assert.True(File.Exists(named.Groups["library"].Value.Split(' ')[0]), first);
            Assert.Equal(named.Groups["library"].Value.Contains("openblas", StringComparison.OrdinalIgnoreCase), first.Contains("on OpenBLAS SGEMM", StringComparison.Ordinal));
        }
    }
}

/// <summary>
/// What every mode of `attention bench` refuses before it starts: each refusal exits 2 and names
/// the option and its value. Before this check the kernel bench crashed with a stack trace on a
/// bad shape, and with --check-rows 0 reported "max err/tol 0.000" for a check it never made.
/// </summary>
public sealed class BenchOptionTests
{
    [Theory]
    [InlineData("", "--seq", "-5")]
    [InlineData("", "--dim", "0")]
    [InlineData("", "--heads", "0")]
    [InlineData("", "--threads", "0")]
    [InlineData("", "--block", "7")]
    [InlineData("", "--check-rows", "0")]
    [InlineData("", "--repeat", "0")]
    [InlineData("--decode", "--check-rows", "0")]
    [InlineData("--decode", "--kv-heads", "0")]
    [InlineData("--projection", "--seq", "0")]
    [InlineData("--pipeline", "--seq", "0")]
    [InlineData("--pipeline", "--workers", "0")]
    [InlineData("--pipeline", "--max-shard-bytes", "-1")]
    [InlineData("--cluster", "--workers", "0")]
    public async Task A_bad_option_exits_2_naming_it_in_every_mode(string mode, string option, string value)
    {
        // A small shape for the options the case leaves alone, so a mode that wrongly accepted the case would still finish quickly.
        string[] shape = ["--seq", "256", "--dim", "16", "--heads", "2", "--threads", "1", "--repeat", "1"];
        var kept = shape.Chunk(2).Where(pair => pair[0] != option).SelectMany(pair => pair);
        string[] modeArgs = mode.Length == 0 ? [] : [mode];
        var (code, stdout, stderr) = await Run(["bench", .. modeArgs, .. kept, option, value]);
        Assert.True(code == 2, $"{mode} {option} {value}: exit {code}\n{stdout}\n{stderr}");
        Assert.Contains($"bench: {option} {value}", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("|---", stdout, StringComparison.Ordinal);
    }
}

/// <summary>`attention bench --pipeline`: the embedded pipeline timed against the single-node kernel, bits compared.</summary>
public sealed class PipelineBenchTests
{
    [Fact]
    public async Task A_small_pipeline_bench_shards_the_job_and_finds_the_same_bits()
    {
        // A 64 KiB budget cuts N 512, d 32, 2 heads in blocks of 128 keys into several shards.
        var (code, stdout, stderr) = await Run("bench", "--pipeline", "--seq", "512", "--dim", "32", "--heads", "2", "--workers", "2", "--repeat", "1", "--max-shard-bytes", "65536", "--causal", "--block", "128");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        var (header, rows) = BenchTable.Parse(stdout);
        var row = Assert.Single(rows);
        string line = string.Join(" | ", row);
        Assert.Equal("causal", row[BenchTable.Column(header, "mask")]);
        Assert.True(int.Parse(row[BenchTable.Column(header, "shards")], CultureInfo.InvariantCulture) > 1, line);
        Assert.True(double.Parse(row[BenchTable.Column(header, "pipeline/single")], CultureInfo.InvariantCulture) > 0, line);
        Assert.Equal("yes", row[BenchTable.Column(header, "bits equal")]);
    }
}

/// <summary>`attention bench --pipeline` times the plan a user's job runs with: the one `run --dry-run` shows.</summary>
public sealed class PipelineBenchPlanTests
{
    [Fact]
    public async Task The_pipeline_bench_runs_the_plan_a_dry_run_shows()
    {
        // 256 rows are one panel: the embedded pipeline gives each shard whole key ranges (its
        // panels read them as views), where a plan that counted the keys against the 64 KiB
        // budget would cut every head's keys into several shards.
        string[] shape = ["--seq", "256", "--dim", "32", "--heads", "2", "--workers", "2", "--max-shard-bytes", "65536", "--block", "16"];
        var (code, stdout, stderr) = await Run(["bench", "--pipeline", "--repeat", "1", .. shape]);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        var (header, rows) = BenchTable.Parse(stdout);
        var row = Assert.Single(rows);
        string shards = row[BenchTable.Column(header, "shards")];
        Assert.Equal("yes", row[BenchTable.Column(header, "bits equal")]);

        (code, var dry, stderr) = await Run(["run", "--random", "--dry-run", .. shape]);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains($"dry run: {shards} shards on 2 workers", dry, StringComparison.Ordinal);
    }
}

/// <summary>The markdown table a bench prints: its header cells and its data rows' cells.</summary>
internal static class BenchTable
{
    public static (string[] Header, List<string[]> Rows) Parse(string stdout)
    {
        var lines = stdout.Split('\n').Select(line => line.TrimEnd('\r')).Where(line => line.StartsWith('|')).ToList();
        Assert.True(lines.Count >= 2, $"no table in:\n{stdout}");
        var header = Cells(lines[0]);
        var rows = lines.Skip(2).Select(Cells).ToList();
        Assert.All(rows, row => Assert.Equal(header.Length, row.Length));
        return (header, rows);
    }

    public static int Column(string[] header, string name)
    {
        int at = Array.IndexOf(header, name);
        Assert.True(at >= 0, $"no '{name}' column in: {string.Join(" | ", header)}");
        return at;
    }

    private static string[] Cells(string line) => line.Split('|', StringSplitOptions.TrimEntries)[1..^1];
}
