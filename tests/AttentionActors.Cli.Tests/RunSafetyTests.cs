using System.Diagnostics;
using AttentionActors.Cli.Commands;
using AttentionActors.Pipeline;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention run` refuses what it cannot do before doing any of it, and says only what it checked.</summary>
public sealed class RunSafetyTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-safety-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public async Task Verify_with_single_node_compares_against_a_sharded_run()
    {
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "300", "--dim", "16", "--heads", "2", "--causal", "--single-node", "--workers", "3", "--verify");
        Assert.True(code == 0, stderr);
        Assert.Contains("verify: a single node (3 threads) and the embedded pipeline (3 workers) agree bit for bit: yes", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = await Run("run", "--random", "--seq", "300", "--dim", "16", "--heads", "2", "--causal", "--workers", "3", "--verify");
        Assert.True(code == 0, stderr);
        Assert.Contains("verify: the embedded pipeline (3 workers) and a single node (3 threads) agree bit for bit: yes", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("100000")]
    [InlineData("0")]
    public async Task A_worker_count_out_of_bounds_exits_2_at_once(string workers)
    {
        var clock = Stopwatch.StartNew();
        var (code, _, stderr) = await Run("run", "--random", "--seq", "100", "--dim", "64", "--workers", workers);
        Assert.Equal(2, code);
        Assert.Contains($"--workers {workers} must be between 1 and {PipelineOptions.MaxWorkers}", stderr, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"refusing took {clock.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void The_estimate_of_a_3M_token_8_head_job_exceeds_a_24_GiB_machine()
    {
        var shape = (string name) => new Kernels.TensorShape(name, 1, 8, 3_000_000, 64);
        var geometry = Kernels.AttentionGeometry.Create(shape("Q"), shape("K"), shape("V"));
        long inputs = 3 * 4L * 8 * 3_000_000 * 64;
        var estimate = Commands.JobEstimate.For(geometry, inputs, outputMapped: false, workers: 2, maxShardBytes: 8 << 20, verify: false, memoryLimit: 24L << 30).WithSpeed(Commands.JobEstimate.MeasureSpeed(geometry));
        Assert.False(estimate.Fits, $"needs {estimate.NeededBytes >> 20} MiB of {estimate.AvailableBytes >> 20}");
        Assert.True(estimate.NeededBytes > 23L << 30, $"needs only {estimate.NeededBytes >> 20} MiB");
        Assert.Equal(4.0 * 8 * 3e6 * 3e6 * 64, estimate.Flops, 1e-9 * estimate.Flops);
        Assert.True(estimate.Time > TimeSpan.FromHours(1), $"estimated {estimate.Time}");
    }

    [Theory]
    [InlineData(1, 32, 8, false, 4)] // a decoding step: the group's four query heads share each shard
    [InlineData(1, 32, 32, false, 1)] // one row per head, no groups
    [InlineData(16, 32, 8, false, 64)]
    [InlineData(2, 32, 8, true, 8)] // a causal mask hiding keys: stacked too, each head's rows keeping their diagonals
    [InlineData(4096, 8, 8, false, 128)] // dense: a full panel
    public void The_speed_probe_scores_as_many_rows_as_a_shard_of_the_job(int queries, int heads, int kvHeads, bool causal, int rows)
    {
        var geometry = Kernels.AttentionGeometry.Create(
            new Kernels.TensorShape("Q", 1, heads, queries, 64),
            new Kernels.TensorShape("K", 1, kvHeads, 8192, 64),
            new Kernels.TensorShape("V", 1, kvHeads, 8192, 64),
            new Kernels.AttentionOptions { Causal = causal, Alignment = Kernels.DiagonalAlignment.BottomRight });
        Assert.Equal(rows, Commands.JobEstimate.ProbeRows(geometry));
    }

    [Fact]
    public void A_random_decoding_step_is_limited_by_its_largest_tensor_not_by_the_longest_length_on_the_most_heads()
    {
        // K and V [1, 8, 1M, 128]: 1.0e9 elements each, which a tensor holds; Q [1, 32, 1, 128].
        var decoding = new RunRequest { Random = true, Seq = 1, KvSeq = 1_000_000, Dim = 128, Heads = 32, KvHeads = 8 };
        Assert.Equal((1, 1_000_000, 128, 8), RunJob.RandomShape(decoding));

        var tooLong = Assert.Throws<UsageException>(() => RunJob.RandomShape(decoding with { KvSeq = 3_000_000 }));
        Assert.Contains("--random K and V (each): 3,072,000,000 elements, more than one tensor may hold", tooLong.Message, StringComparison.Ordinal);

        var tooManyQueries = Assert.Throws<UsageException>(() => RunJob.RandomShape(decoding with { Seq = 600_000 }));
        Assert.Contains("--random Q: 2,457,600,000 elements", tooManyQueries.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("12X")]
    [InlineData("-5M")]
    public async Task A_bad_memory_limit_exits_2(string limit)
    {
        var (code, _, stderr) = await Run("run", "--random", "--seq", "64", "--dim", "16", "--memory-limit", limit);
        Assert.Equal(2, code);
        Assert.Contains($"--memory-limit '{limit}' must be a positive number of bytes", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_summary_shows_the_estimated_time_and_counts_in_the_singular()
    {
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "200", "--dim", "16", "--heads", "1", "--workers", "1");
        Assert.True(code == 0, stderr);
        Assert.Matches(@"\d+ shards? on the embedded pipeline \(1 worker\);", stdout);
        Assert.DoesNotContain("1 workers", stdout, StringComparison.Ordinal);
        Assert.Contains("(estimated ", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = await Run("run", "--random", "--seq", "200", "--dim", "16", "--heads", "1", "--workers", "1", "--single-node");
        Assert.True(code == 0, stderr);
        Assert.Contains("on a single node (1 thread);", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--out")]
    [InlineData("--lse-out")]
    public async Task An_output_in_a_missing_folder_is_refused_before_computing(string option)
    {
        string path = Path.Combine(dir, "no", "such", "o.npy");
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "64", "--dim", "16", option, path);
        Assert.Equal(2, code);
        Assert.Contains($"{option} {path}: the folder {Path.GetDirectoryName(path)} does not exist", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout);
    }

    [Fact]
    public async Task A_cancelled_job_leaves_no_output_file()
    {
        string output = Path.Combine(dir, "out.npy");
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        var (code, _, stderr) = await Run(cancelled.Token, "run", "--random", "--seq", "512", "--dim", "16", "--out", output, "--lse-out", Path.Combine(dir, "lse.npy"));
        Assert.Equal(1, code);
        Assert.Contains("cancelled", stderr, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(dir));
    }

    [Fact]
    public void The_attention_script_does_not_rebuild_or_print_build_output_when_nothing_changed()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "AttentionActors.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("the repository root was not found");
        }

        string dll = Path.Combine(root, "src", "AttentionActors.Cli", "bin", "Release", "net10.0", "attention.dll");
        (string Out, string Err) Call(TimeSpan limit)
        {
            using var process = Process.Start(new ProcessStartInfo("bash", [Path.Combine(root, "attention"), "--help"]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            Assert.True(process.WaitForExit(limit), $"./attention --help did not finish in {limit.TotalMinutes} minutes");
            Assert.Equal(0, process.ExitCode);
            return (stdout.Result, stderr.Result);
        }

        // The first call may build from nothing (a fresh clone), while the other test assemblies load both cores.
        Call(TimeSpan.FromMinutes(12));
        var built = File.GetLastWriteTimeUtc(dll);
        var (output, errors) = Call(TimeSpan.FromMinutes(3));
        Assert.Equal(built, File.GetLastWriteTimeUtc(dll));
        Assert.DoesNotContain("Build succeeded", output + errors, StringComparison.Ordinal);
        Assert.Equal(string.Empty, errors);
        Assert.Contains("Usage:", output, StringComparison.Ordinal);
    }
}
