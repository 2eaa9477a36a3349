using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>Tests that count the bytes the process allocates, so nothing else may run beside them.</summary>
[CollectionDefinition(nameof(AllocationTests), DisableParallelization = true)]
public sealed class AllocationCollection
{
}

/// <summary>Refusals and dry runs allocate nothing of the job's size (measured process-wide, running alone).</summary>
[Collection(nameof(AllocationTests))]
public sealed class AllocationTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-alloc-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public async Task A_job_too_large_for_memory_is_refused_before_anything_is_allocated()
    {
        // 20000 × 64 floats per tensor: Q, K, V 15 MiB; were the refusal lost, the job would just run for a second.
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "20000", "--dim", "64", "--heads", "1", "--memory-limit", "16M");
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Equal(2, code);
        Assert.Contains("this job needs about", stderr, StringComparison.Ordinal);
        Assert.Contains("Q, K, V 15 MiB", stderr, StringComparison.Ordinal);
        Assert.Contains("but 16 MiB is available", stderr, StringComparison.Ordinal);
        Assert.Contains("--no-memory-check", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout);
        Assert.True(allocated < 8L << 20, $"{allocated >> 10} KiB were allocated before refusing");

        (code, _, stderr) = await Run("run", "--random", "--seq", "2000", "--dim", "64", "--heads", "1", "--memory-limit", "16M", "--no-memory-check", "--quiet");
        Assert.True(code == 0, stderr);
    }

    [Fact]
    public async Task A_plan_with_more_shards_than_allowed_is_refused_before_the_inputs_are_made()
    {
        // Q, K and V would be 384 MiB; 1 MiB shards need far more than 4 of them.
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "65536", "--dim", "64", "--heads", "8", "--max-shards", "4", "--max-shard-bytes", "1048576");
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Equal(2, code);
        Assert.Contains("needs more than 4 shards (the plan's limit)", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout);
        Assert.True(allocated < 48L << 20, $"{allocated >> 20} MiB were allocated before refusing");
    }

    [Fact]
    public async Task A_dry_run_prints_the_plan_without_loading_computing_or_writing()
    {
        string output = Path.Combine(dir, "out.npy");
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var (code, stdout, stderr) = await Run("run", "--random", "--seq", "60000", "--dim", "64", "--heads", "2", "--causal", "--workers", "3", "--dry-run", "--nodes", "1", "--out", output);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.True(code == 0, stderr);

        // Q, K and V alone would be 88 MiB: a dry run must not create them.
        Assert.True(allocated < 48L << 20, $"{allocated >> 20} MiB were allocated by a dry run");
        Assert.Empty(Directory.GetFiles(dir));
        var shape = (string name) => new Kernels.TensorShape(name, 1, 2, 60000, 64);
        var plan = Pipeline.Planning.ShardPlanner.Plan(Kernels.AttentionGeometry.Create(shape("Q"), shape("K"), shape("V"), new Kernels.AttentionOptions { Causal = true }), 3, new Pipeline.Planning.PlanOptions { KeysFromStore = true });
        Assert.Contains($"dry run: {plan.Shards.Count} shards on 3 workers", stdout, StringComparison.Ordinal);
        Assert.Contains("moved in all", stdout, StringComparison.Ordinal);
        Assert.Contains("dry run: on 1 worker node of 3 / 3 / 3 (min / median / max) threads", stdout, StringComparison.Ordinal);
        Assert.Contains("dry run: worker 2:", stdout, StringComparison.Ordinal);
        Assert.Contains($"| {plan.Shards[0].Id} | 0 | {plan.Shards[0].Head} | [{plan.Shards[0].RowStart}, {plan.Shards[0].RowEnd}) |", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("attention: Q", stdout, StringComparison.Ordinal);
    }
}
