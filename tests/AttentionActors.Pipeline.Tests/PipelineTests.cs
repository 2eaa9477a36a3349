using AttentionActors.Kernels;
using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Tests;

/// <summary>End to end: the embedded pipeline equals single-node bit for bit, and the reference within the contract.</summary>
public class PipelineTests
{
    private static readonly string[] ScenarioNames = ["gqa", "gqa decoding", "speculative decoding", "causal top-left", "causal bottom-right", "padding", "window", "cross", "alibi", "varlen", "mask"];

    public static TheoryData<string> Scenarios => [.. ScenarioNames];

    /// <summary>The scenarios with rows enough for the weight windows below (decoding steps have five and sixteen).</summary>
    public static TheoryData<string> WindowScenarios => [.. ScenarioNames.Where(name => !name.EndsWith("decoding", StringComparison.Ordinal))];

    private static (AttentionProblem Problem, string Name) Scenario(string name)
    {
        var (q, k, v) = name switch
        {
            "gqa" => TestData.Qkv(10, 2, 6, 2, 700, 700, 32, 24),
            "causal top-left" => TestData.Qkv(11, 1, 4, 4, 600, 1100, 32, 32),
            "causal bottom-right" => TestData.Qkv(12, 1, 4, 1, 1100, 600, 32, 32),
            "padding" => TestData.Qkv(13, 3, 2, 2, 500, 900, 16, 40),
            "window" => TestData.Qkv(14, 1, 3, 3, 1500, 1500, 24, 24),
            "alibi" => TestData.Qkv(16, 2, 4, 2, 400, 900, 16, 16),
            "varlen" => TestData.Qkv(17, 4, 4, 2, 600, 700, 16, 16),
            "mask" => TestData.Qkv(18, 2, 4, 2, 500, 800, 16, 16),
            "gqa decoding" => TestData.Qkv(20, 2, 8, 2, 5, 1300, 32, 24),
            "speculative decoding" => TestData.Qkv(21, 2, 8, 2, 16, 1300, 32, 24),
            _ => TestData.Qkv(15, 2, 2, 2, 333, 1777, 40, 8),
        };
        var options = name switch
        {
            "causal top-left" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.TopLeft, BlockSize = 64 },
            "causal bottom-right" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 },
            "padding" => new AttentionOptions { KeyLengths = [900, 1, 450], BlockSize = 64 },
            "window" => new AttentionOptions { Window = (100, 20), Causal = true, BlockSize = 32 },
            "varlen" => new AttentionOptions { SequenceLengths = [new(600, 700), new(3, 650), new(0, 10), new(411, 97)], Causal = true, Alignment = DiagonalAlignment.BottomRight, Window = (150, -1), BlockSize = 32 },
            "alibi" => new AttentionOptions { AlibiSlopes = [0.5f, 0.25f, 0.125f, 0.0625f, 0.02f, 0.3f, 0.01f, 0.9f], Alignment = DiagonalAlignment.BottomRight, Window = (200, 50), BlockSize = 32 },
            "mask" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, KeyLengths = [800, 610], BlockSize = 32 },
            "gqa decoding" => new AttentionOptions { KeyLengths = [1300, 777], BlockSize = 32 },

            // Stacked per K/V head with each head's diagonals (rows in periods of 16).
            "speculative decoding" => new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, Window = (700, 0), KeyLengths = [1300, 1290], BlockSize = 32 },
            _ => new AttentionOptions { BlockSize = 48 },
        };
        return (AttentionProblem.Create(q, k, v, options, name == "mask" ? DocumentMask(4, 500, 800) : null), name);
    }

    /// <summary>
    /// A per-head additive mask: documents of 200 keys (query i belongs to the document of key
    /// i + 300), random additive values, random holes, and every 37th row of head h + 1 fully masked.
    /// </summary>
    private static AttentionMask DocumentMask(int heads, int nq, int nk)
    {
        var rng = new Random(19);
        var values = new float[heads * nq * nk];
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < nq; i++)
            {
                for (int j = 0; j < nk; j++)
                {
                    bool allowed = (i + 300) / 200 == j / 200 && rng.NextDouble() < 0.8 && (i % 37 != h + 1);
                    values[(((h * nq) + i) * nk) + j] = allowed ? (float)(rng.NextDouble() - 0.5) : float.NegativeInfinity;
                }
            }
        }

        return AttentionMask.Additive(values, 1, heads, nq, nk);
    }

    /// <summary>Starts an embedded pipeline for one test; a derived suite runs every test again with other actor settings.</summary>
    protected virtual EmbeddedPipeline Start(PipelineOptions options) => EmbeddedPipeline.Start(options);

    private async Task<AttentionResult> Sharded(AttentionProblem problem, PipelineOptions cluster)
    {
        await using var embedded = Start(cluster);
        return await embedded.ComputeAsync(problem);
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public async Task Sharded_output_equals_single_node_bit_for_bit_for_any_worker_count(string name)
    {
        var (problem, _) = Scenario(name);
        var single = Attention.Compute(problem);
        var reference = ReferenceAttention.Compute(problem.Q, problem.K, problem.V, problem.Options, problem.Mask);
        TestData.AssertWithinContract(single, reference, $"{name} single-node");
        foreach (int workers in new[] { 1, 2, 3, 7, 16 })
        {
            // A small byte budget forces key-range splits too, so partial merges are exercised.
            var cluster = new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = 96 << 10 } };
            var sharded = await Sharded(problem, cluster);
            TestData.AssertBitwise(single.Output.Data.Span, sharded.Output.Data.Span, $"{name}, {workers} workers, out");
            TestData.AssertBitwise(single.Lse, sharded.Lse, $"{name}, {workers} workers, lse");
        }
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public async Task Entropy_rides_through_shards_and_merges_to_the_single_node_bits(string name)
    {
        var (plain, _) = Scenario(name);
        var options = plain.Options with { Entropy = true };
        var withEntropy = AttentionProblem.Create(plain.Q, plain.K, plain.V, options, plain.Mask);
        var single = Attention.Compute(withEntropy);
        foreach (int workers in new[] { 2, 7 })
        {
            var cluster = new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = 96 << 10 } };
            var sharded = await Sharded(withEntropy, cluster);
            Assert.NotNull(sharded.Entropy);
            TestData.AssertBitwise(single.Entropy!, sharded.Entropy!, $"{name}, {workers} workers, entropy");
            TestData.AssertBitwise(single.Output.Data.Span, sharded.Output.Data.Span, $"{name}, {workers} workers, out with entropy on");
        }
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public async Task Coverage_as_a_second_distributed_pass_has_the_single_node_bits(string name)
    {
        var (problem, _) = Scenario(name);
        var lse = Attention.Compute(problem).Lse;
        var single = Inspection.Coverage(problem, lse);
        var reference = ReferenceAttention.Inspect(problem.Q, problem.K, problem.Options, problem.Mask).Coverage;
        TestData.AssertClose(single, reference, $"{name} single-node coverage");
        foreach (var (workers, budget) in new[] { (1, 8L << 20), (3, 64L << 10), (7, 24L << 10) })
        {
            await using var cluster = Start(new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = budget } });
            var plan = CoveragePlanner.Plan(problem.Geometry, workers, cluster.Options.Plan);
            Assert.All(plan.Shards, s => Assert.True(s.Bytes <= budget, $"{s} needs {s.Bytes} bytes, over the budget {budget}"));
            var sharded = await cluster.CoverageAsync(problem, lse);
            TestData.AssertBitwise(single, sharded, $"{name}, {workers} workers, {plan.Shards.Count} coverage shards");
        }
    }

    [Fact]
    public async Task A_coverage_plan_that_cannot_keep_to_the_budget_is_refused_before_anything_runs()
    {
        var (problem, _) = Scenario("gqa");
        var error = Assert.Throws<AttentionInputException>(() => CoveragePlanner.Plan(problem.Geometry, 2, new PlanOptions { MaxShardBytes = 1000 }));
        Assert.Contains("shard budget", error.Message);
        await using var cluster = Start(new PipelineOptions { Workers = 2 });
        var lse = Attention.Compute(problem).Lse;
        var wrong = await Assert.ThrowsAsync<ArgumentException>(() => cluster.CoverageAsync(problem, lse.AsMemory(1)));
        Assert.Contains("log-sum-exp holds", wrong.Message);
    }

    [Theory]
    [MemberData(nameof(WindowScenarios))]
    public async Task Weight_windows_as_a_distributed_pass_have_the_single_node_bits(string name)
    {
        var (problem, _) = Scenario(name);
        var g = problem.Geometry;
        var lse = Attention.Compute(problem).Lse;
        var windows = new[]
        {
            new WeightsWindow(g.Batch - 1, null, 0, g.QuerySeq, 0, g.KeySeq, 48, 40, WeightPooling.Max),
            new WeightsWindow(0, g.Heads - 1, 3, 200, 17, 260, 197, 243, WeightPooling.Mean),
            new WeightsWindow(0, null, g.QuerySeq / 3, g.QuerySeq, 5, g.KeySeq - 1, 29, 61, WeightPooling.Mean),
        };
        foreach (var window in windows)
        {
            var single = Inspection.Weights(problem, lse, window.Batch, window.Head, (window.RowLo, window.RowHi), (window.ColLo, window.ColHi), window.CellRows, window.CellCols, window.Pooling);
            foreach (var (workers, budget) in new[] { (1, 8L << 20), (3, 128L << 10), (7, 80L << 10) })
            {
                await using var cluster = Start(new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = budget } });
                var plan = WeightsPlanner.Plan(g.ForWeights(window), workers, cluster.Options.Plan);
                Assert.All(plan.Shards, s => Assert.True(s.Bytes <= budget, $"{s} needs {s.Bytes} bytes, over the budget {budget}"));
                var sharded = await cluster.WeightsAsync(problem, lse, window);
                TestData.AssertBitwise(single, sharded, $"{name}, {window}, {workers} workers, {plan.Shards.Count} weights shards");
            }
        }
    }

    [Fact]
    public async Task A_weights_plan_that_cannot_keep_to_the_budget_or_a_bad_window_is_refused_before_anything_runs()
    {
        var (problem, _) = Scenario("gqa");
        var window = new WeightsWindow(0, null, 0, 700, 0, 700, 1, 1, WeightPooling.Mean);
        var error = Assert.Throws<AttentionInputException>(() => WeightsPlanner.Plan(problem.Geometry.ForWeights(window), 2, new PlanOptions { MaxShardBytes = 64 << 10 }));
        Assert.Contains("shard budget", error.Message);
        await using var cluster = Start(new PipelineOptions { Workers = 2 });
        var lse = Attention.Compute(problem).Lse;
        var outside = await Assert.ThrowsAsync<AttentionInputException>(() => cluster.WeightsAsync(problem, lse, window with { RowHi = 701 }));
        Assert.Contains("outside [0, 700)", outside.Message);
        var wrong = await Assert.ThrowsAsync<ArgumentException>(() => cluster.WeightsAsync(problem, lse.AsMemory(1), window));
        Assert.Contains("log-sum-exp holds", wrong.Message);
    }

    [Theory]
    [InlineData("self, causal, all biases")]
    [InlineData("cross with a value input, padded")]
    public async Task A_layer_job_projects_on_the_workers_and_gives_the_bits_of_projecting_first(string name)
    {
        var rng = new Random(name.Length);
        float[] Draw(long count, float scale) => [.. Enumerable.Range(0, (int)count).Select(_ => (float)((rng.NextDouble() * 2) - 1) * scale)];
        bool cross = name.StartsWith("cross", StringComparison.Ordinal);
        int batch = 2, n = 150, nk = cross ? 230 : 150, heads = 4, e = 32, eq = 24, ek = cross ? 20 : 24, ev = cross ? 12 : 24;
        var weights = new MultiHeadWeights(heads, Draw(e * eq, 0.3f), Draw(e * ek, 0.3f), Draw(e * ev, 0.3f), Draw(e * e, 0.3f), e, eq, ek, ev, e)
        {
            Bq = cross ? null : Draw(e, 0.1f),
            Bk = cross ? null : Draw(e, 0.1f),
            Bv = Draw(e, 0.1f),
        };
        var x = Draw((long)batch * n * eq, 1f);
        var keyInput = cross ? Draw((long)batch * nk * ek, 1f) : x;
        float[]? valueInput = cross ? Draw((long)batch * nk * ev, 1f) : null;
        var options = cross ? new AttentionOptions { KeyLengths = [230, 77], BlockSize = 32 } : new AttentionOptions { Causal = true, BlockSize = 32 };

        var (q, k, v) = MultiHeadLayer.Project(weights, batch, x, n, keyInput, valueInput ?? keyInput, nk);
        var single = Attention.Compute(AttentionProblem.Create(q, k, v, options));
        var layer = LayerProblem.Create(weights, batch, x, n, keyInput, valueInput, nk, options);
        foreach (var (workers, budget) in new[] { (1, 8L << 20), (3, 48L << 10) })
        {
            await using var cluster = Start(new PipelineOptions { Workers = workers, Plan = new PlanOptions { MaxShardBytes = budget } });
            var sharded = await cluster.ComputeLayerAsync(layer);
            TestData.AssertBitwise(single.Output.Data.Span, sharded.Output.Data.Span, $"{name}, {workers} workers, heads' output");
            TestData.AssertBitwise(single.Lse, sharded.Lse, $"{name}, {workers} workers, lse");
        }
    }

    [Fact]
    public void A_layer_shard_with_bad_inputs_is_refused_naming_them()
    {
        var weights = new MultiHeadWeights(2, new float[16 * 8], new float[16 * 8], new float[16 * 8], new float[16 * 16], 16, 8, 8, 8, 16);
        var x = new float[40 * 8];
        var layer = LayerProblem.Create(weights, 1, x, 40, x, null, 40, new AttentionOptions { BlockSize = 16 });
        var input = ShardInput.SliceLayer(layer, 0, 1, 0, 20, 0, 3);
        var shortX = Assert.Throws<AttentionInputException>(() => (input with { Layer = input.Layer! with { X = new float[10] } }).Projected());
        Assert.Contains("X, key and value input rows hold 10, ", shortX.Message);
        var nan = new float[8 * 8];
        nan[5] = float.NaN;
        var badWeights = Assert.Throws<AttentionInputException>(() => (input with { Layer = input.Layer! with { Wk = nan } }).Projected());
        Assert.Contains("W_k rows hold NaN", badWeights.Message);
        var bias = Assert.Throws<AttentionInputException>(() => (input with { Layer = input.Layer! with { Bq = new float[8] } }).Projected());
        Assert.Contains("b_q arrived for a layer without that bias", bias.Message);
        var shape = Assert.Throws<AttentionInputException>(() => LayerProblem.Create(weights, 1, x, 41, x, null, 40));
        Assert.Contains("X holds 320 values", shape.Message);
    }

    [Fact]
    public async Task Progress_reaches_every_shard_and_all_flops()
    {
        var (problem, _) = Scenario("gqa");
        var reports = new List<Pipeline.Client.JobProgress>();
        var progress = new SyncProgress<Pipeline.Client.JobProgress>(reports.Add);
        await using var cluster = Start(new PipelineOptions { Workers = 3 });
        await cluster.ComputeAsync(problem, progress: progress);
        var last = reports[^1];
        Assert.Equal(last.ShardsTotal, last.ShardsDone);
        Assert.Equal(last.FlopsTotal, last.FlopsDone, 3);
        Assert.True(reports.Count > 1, "progress must be reported along the way");
    }

    /// <summary>
    /// A decoding step runs stacked per K/V head (<see cref="KeyGroupStacking"/>): its message also says
    /// how the stacked shards' heads and rows map to the query heads.
    /// </summary>
    [Theory]
    [InlineData("gqa", 3, "")]
    [InlineData("gqa decoding", 1, "head k of its shards holds query heads 4k to 4k + 3, and its row g·5 + i is row i of query head 4k + g")]
    public async Task A_shard_that_keeps_failing_fails_the_job_naming_the_shard(string name, int failing, string mapping)
    {
        var (problem, _) = Scenario(name);
        var options = new PipelineOptions
        {
            Workers = 2,
            Compute = (input, s, a, ct) => s.Id == failing ? throw new InvalidOperationException("disk on fire") : Kernel(input, ct),
        };
        await using var cluster = Start(options);
        var ex = await Assert.ThrowsAsync<AttentionJobException>(() => cluster.ComputeAsync(problem));
        Assert.Contains($"shard {failing} ", ex.Message, StringComparison.Ordinal);
        Assert.Contains("disk on fire", ex.Message, StringComparison.Ordinal);
        Assert.Contains("attempt 3 of 3", ex.Message, StringComparison.Ordinal);
        Assert.Contains(mapping, ex.Message, StringComparison.Ordinal);
        Assert.Equal(mapping.Length > 0, ex.Message.Contains("stacked", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_shard_that_fails_once_is_retried_and_the_result_is_exact()
    {
        var (problem, _) = Scenario("padding");
        int failures = 0;
        var options = new PipelineOptions
        {
            Workers = 2,
            Compute = (input, s, a, ct) => s.Id == 0 && a == 1 && Interlocked.Increment(ref failures) == 1
                ? throw new IOException("transient")
                : Kernel(input, ct),
        };
        await using var cluster = Start(options);
        var result = await cluster.ComputeAsync(problem);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, result.Output.Data.Span, "after a retry");
        Assert.Equal(1, failures);
    }

    [Fact]
    public async Task A_late_shard_is_reissued_and_the_duplicate_is_ignored()
    {
        var (problem, _) = Scenario("window");
        using var release = new ManualResetEventSlim();
        int attempts = 0;
        var options = new PipelineOptions
        {
            Workers = 2,
            Job = new Pipeline.Coordinator.JobOptions { ShardTimeout = TimeSpan.FromMilliseconds(200), MinWorkerFlops = 1e15 },
            Compute = (input, s, a, ct) =>
            {
                if (s.Id == 0 && a == 1)
                {
                    Interlocked.Increment(ref attempts);
                    release.Wait(TimeSpan.FromSeconds(20), ct);
                }

                return Kernel(input, ct);
            },
        };
        await using var cluster = Start(options);
        var result = await cluster.ComputeAsync(problem);
        release.Set();
        Assert.Equal(1, attempts);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, result.Output.Data.Span, "with a re-issued shard");
    }

    [Fact]
    public async Task Cancellation_stops_the_job()
    {
        var (problem, _) = Scenario("gqa");
        using var cts = new CancellationTokenSource();
        int computed = 0;
        var options = new PipelineOptions
        {
            Workers = 1,
            Plan = new PlanOptions { MaxShardBytes = 32 << 10 },
            Compute = (input, s, a, ct) =>
            {
                if (Interlocked.Increment(ref computed) == 2)
                {
                    cts.Cancel();
                }

                Thread.Sleep(20);
                return Kernel(input, ct);
            },
        };
        await using var cluster = Start(options);
        var plan = ShardPlanner.Plan(problem, 1, options.Plan);
        Assert.True(plan.Shards.Count > 10, $"the plan has only {plan.Shards.Count} shards");
        await Assert.ThrowsAsync<OperationCanceledException>(() => cluster.ComputeAsync(problem, plan, cancellationToken: cts.Token));
        await Task.Delay(200);
        Assert.True(computed < plan.Shards.Count / 2, $"{computed} of {plan.Shards.Count} shards were still computed after cancelling");
    }

    [Fact]
    public async Task Cancelling_interrupts_a_shard_that_is_already_running()
    {
        var (problem, _) = Scenario("gqa");
        using var started = new ManualResetEventSlim();
        using var interrupted = new ManualResetEventSlim();
        var options = new PipelineOptions
        {
            Workers = 1,
            Compute = (input, s, a, ct) =>
            {
                started.Set();
                if (ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(60)))
                {
                    interrupted.Set();
                }

                ct.ThrowIfCancellationRequested();
                return Kernel(input, ct);
            },
        };
        await using var cluster = Start(options);
        using var cts = new CancellationTokenSource();
        var job = cluster.ComputeAsync(problem, cancellationToken: cts.Token);
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)), "the shard never started");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await cts.CancelAsync();
        await Assert.ThrowsAsync<OperationCanceledException>(() => job);
        Assert.True(interrupted.Wait(TimeSpan.FromSeconds(5)), "the running shard was not told to stop");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"cancelling took {clock.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task Shutting_down_abandons_a_long_shard_promptly()
    {
        var (problem, _) = Scenario("gqa");
        using var started = new ManualResetEventSlim();
        var options = new PipelineOptions
        {
            Workers = 1,
            Compute = (input, s, a, ct) =>
            {
                started.Set();
                ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(60));
                ct.ThrowIfCancellationRequested();
                return Kernel(input, ct);
            },
        };
        var cluster = Start(options);
        var job = cluster.ComputeAsync(problem);
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)), "the shard never started");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await cluster.DisposeAsync();
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"shutdown took {clock.Elapsed.TotalSeconds:F1} s with a shard in flight");

        // The job's task must end, faulted — not merely "not succeed". The shard would hold it for
        // 60 s, so the generous guard only catches a task left waiting.
        var error = await Assert.ThrowsAsync<AttentionJobException>(() => job.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Contains("shut down", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cancelling_completes_the_job_even_when_the_shard_ignores_the_token()
    {
        var (problem, _) = Scenario("gqa");
        using var started = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int returned = 0;
        var options = new PipelineOptions
        {
            Workers = 1,
            Compute = (input, s, a, ct) =>
            {
                started.Set();
                release.Wait(TimeSpan.FromSeconds(60), CancellationToken.None);
                Interlocked.Exchange(ref returned, 1);
                return Kernel(input, CancellationToken.None);
            },
        };
        await using var cluster = Start(options);
        using var cts = new CancellationTokenSource();
        var job = cluster.ComputeAsync(problem, cancellationToken: cts.Token);
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)), "the shard never started");
        await cts.CancelAsync();

        // The shard stays blocked until released, so the task ending first proves it did not wait for it.
        await Assert.ThrowsAsync<OperationCanceledException>(() => job.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, Volatile.Read(ref returned));
        release.Set();
    }

    [Fact]
    public async Task A_worker_that_returns_too_little_is_retried_and_never_merged()
    {
        var (problem, _) = Scenario("causal top-left");
        int forged = 0;
        var options = new PipelineOptions
        {
            Workers = 2,
            Plan = new PlanOptions { MaxShardBytes = 96 << 10 },
            Compute = (input, s, a, ct) => a == 1 && s.Id % 2 == 0 && Interlocked.Increment(ref forged) > 0
                ? new Kernels.Partials.PartialSet([], input.RowCount, input.Geometry.ValueDim)
                : Kernel(input, ct),
        };
        await using var cluster = Start(options);
        var result = await cluster.ComputeAsync(problem);
        Assert.True(forged > 0);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, result.Output.Data.Span, "after empty partial sets");
    }

    [Fact]
    public async Task A_decoding_steps_shards_hold_every_query_head_of_their_key_value_group()
    {
        // B 2, H 8 over 2 K/V heads, 3 query rows: 4 query heads × 3 rows per group.
        var (q, k, v) = TestData.Qkv(23, 2, 8, 2, 3, 1000, 32, 24);
        var plain = AttentionProblem.Create(q, k, v, new AttentionOptions { KeyLengths = [1000, 611], BlockSize = 32, Entropy = true });
        var causal = AttentionProblem.Create(q, k, v, new AttentionOptions { KeyLengths = [1000, 611], BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight });

        // One row aligned bottom-right sees every key: its causal mask hides nothing, so it stacks too.
        var (q1, k1, v1) = TestData.Qkv(24, 2, 8, 2, 1, 1000, 32, 24);
        var step = AttentionProblem.Create(q1, k1, v1, new AttentionOptions { KeyLengths = [1000, 611], BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight });
        foreach (var (problem, heads, rows) in new[] { (plain, 2, 12), (causal, 2, 12), (step, 2, 4) })
        {
            var seen = new System.Collections.Concurrent.ConcurrentBag<(int Heads, int Rows)>();
            var options = new PipelineOptions
            {
                Workers = 2,
                Plan = new PlanOptions { MaxShardBytes = 96 << 10 },
                Compute = (input, s, a, ct) =>
                {
                    seen.Add((input.Geometry.Heads, input.RowCount));
                    return Kernel(input, ct);
                },
            };
            await using var embedded = Start(options);
            var output = AttentionTensor.Zeros("out", 2, 8, problem.QuerySeq, 24);
            var sharded = await embedded.ComputeAsync(problem, output);
            Assert.Same(output, sharded.Output);

            // A causal mask's diagonal depends on each row's index: stacked, the rows keep their own
            // heads' diagonals (rows in periods of 3), so the causal step stacks too.
            Assert.NotEmpty(seen);
            Assert.All(seen, shard => Assert.Equal(heads, shard.Heads));
            Assert.Equal(rows, seen.Max(shard => shard.Rows));
            var single = Attention.Compute(problem);
            TestData.AssertBitwise(single.Output.Data.Span, output.Data.Span, $"{heads} heads in the shards, out");
            TestData.AssertBitwise(single.Lse, sharded.Lse, $"{heads} heads in the shards, lse");
            if (problem.Options.Entropy)
            {
                TestData.AssertBitwise(single.Entropy!, sharded.Entropy!, $"{heads} heads in the shards, entropy");
            }

            // An output with the values of the stacked shape but not the job's is refused, stacked or not.
            var stackedShape = AttentionTensor.Zeros("out", 2, 2, 4 * problem.QuerySeq, 24);
            var refused = await Assert.ThrowsAsync<ArgumentException>(() => embedded.ComputeAsync(problem, stackedShape));
            Assert.Contains($"does not have the job's shape [2, 8, {problem.QuerySeq}, 24]", refused.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>Whether this suite's messages cross the wire codec (a shard of a cache step then carries its blocks' rows).</summary>
    protected virtual bool OverTheWire => false;

    public static TheoryData<string> CacheSteps => ["one row, GQA 4", "16 rows, causal + window + padding + entropy"];

    [Theory]
    [MemberData(nameof(CacheSteps))]
    public async Task A_decoding_loop_against_a_key_value_cache_gives_the_bits_of_K_and_V_tensors(string name)
    {
        // B 2, H 8 over 2 K/V heads; appends of uneven sizes across block boundaries.
        int nq = name.StartsWith("one", StringComparison.Ordinal) ? 1 : 16;
        var options = nq == 1
            ? new AttentionOptions { BlockSize = 32 }
            : new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight, Window = (500, 0), KeyLengths = [2000, 1990], Entropy = true };
        var cache = new KeyValueCache(2, 2, 32, 24, 32);
        var keys = new List<AttentionTensor>();
        var values = new List<AttentionTensor>();
        int[] appends = [700, 1, 63, 300];
        foreach (int workers in new[] { 1, 2, 3 })
        {
            bool fromCache = true;
            var pipeline = new PipelineOptions
            {
                Workers = workers,
                Plan = new PlanOptions { MaxShardBytes = 96 << 10 },
                Compute = (input, s, a, ct) =>
                {
                    // In one process the shards read the cache; over the wire they carry its rows.
                    fromCache &= input.K.IsEmpty == !OverTheWire && input.V.IsEmpty == !OverTheWire;
                    return Kernel(input, ct);
                },
            };
            await using var embedded = Start(pipeline);
            for (int a = 0; a < appends.Length; a++)
            {
                int seed = (100 * workers) + a;
                keys.Add(TestData.Normal("K", seed, 2, 2, appends[a], 32));
                values.Add(TestData.Normal("V", seed + 50, 2, 2, appends[a], 24));
                cache.Append(keys[^1], values[^1]);
                var q = TestData.Normal("Q", seed + 90, 2, 8, nq, 32);
                var (k, v) = (TestData.ConcatSeq(keys), TestData.ConcatSeq(values));
                var step = options with { KeyLengths = options.KeyLengths?.Select(n => Math.Min(n, k.Seq)).ToArray() };
                var expected = Attention.Compute(q, k, v, step);
                var actual = await embedded.ComputeAsync(q, cache, step);
                string context = $"{name}, {workers} workers, {k.Seq} keys";
                TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"{context}: out");
                TestData.AssertBitwise(expected.Lse, actual.Lse, $"{context}: lse");
                if (step.Entropy)
                {
                    TestData.AssertBitwise(expected.Entropy!, actual.Entropy!, $"{context}: entropy");
                }

                if (a == appends.Length - 1)
                {
                    TestData.AssertWithinContract(actual, ReferenceAttention.Compute(q, k, v, step), context);
                }
            }

            Assert.True(fromCache, $"{name}, {workers} workers: a shard's K/V did not come as {(OverTheWire ? "the cache's rows" : "the cache")}");
        }
    }

    [Fact]
    public async Task An_append_waits_for_a_running_step_and_a_refused_step_leaves_the_cache_free()
    {
        var (k, v) = (TestData.Normal("K", 31, 1, 2, 500, 16), TestData.Normal("V", 32, 1, 2, 500, 16));
        var (k2, v2) = (TestData.Normal("K", 33, 1, 2, 7, 16), TestData.Normal("V", 34, 1, 2, 7, 16));
        var q = TestData.Normal("Q", 35, 1, 4, 2, 16);
        var options = new AttentionOptions { BlockSize = 32 };
        var cache = new KeyValueCache(1, 2, 16, 16, 32);
        cache.Append(k, v);
        using var started = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int shards = 0;
        var pipeline = new PipelineOptions
        {
            Workers = 1,
            Compute = (input, s, a, ct) =>
            {
                Interlocked.Increment(ref shards);
                started.Set();
                release.Wait(TimeSpan.FromSeconds(60), ct);
                return Kernel(input, ct);
            },
        };
        await using var embedded = Start(pipeline);

        // Refused before any shard starts, naming the block size; the gate is free again after.
        var refused = await Assert.ThrowsAsync<AttentionInputException>(() => embedded.ComputeAsync(q, cache, options with { BlockSize = 64 }));
        Assert.Contains("blocks of 32 keys but the options ask for blocks of 64", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, Volatile.Read(ref shards));

        var step = embedded.ComputeAsync(q, cache, options);
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)), "the step's shard never started");
        var append = Task.Run(() => cache.Append(k2, v2));
        await Task.Delay(300);
        Assert.False(append.IsCompleted, "the append ran while a step was reading the cache");
        release.Set();
        var result = await step.WaitAsync(TimeSpan.FromSeconds(30));
        await append.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(507, cache.Length);
        TestData.AssertBitwise(Attention.Compute(q, k, v, options).Output.Data.Span, result.Output.Data.Span, "the step, with the append waiting");
    }

    [Fact]
    public async Task Shards_of_at_most_a_panels_rows_span_their_keys_as_none_packs_them_while_longer_queries_keep_to_the_budget()
    {
        // 1000 keys of d_k 32 and d_v 24 are 219 KiB a K/V head, over twice the 96 KiB budget.
        var (k, v) = (TestData.Normal("K", 41, 2, 2, 1000, 32), TestData.Normal("V", 42, 2, 2, 1000, 24));
        var options = new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight };
        foreach (var (rows, whole) in new[] { (4, true), (100, true), (300, false) })
        {
            var problem = AttentionProblem.Create(TestData.Normal("Q", 43, 2, 4, rows, 32), k, v, options);
            var blocks = new System.Collections.Concurrent.ConcurrentBag<(int Start, int End)>();
            var pipeline = new PipelineOptions
            {
                Workers = 1,
                Plan = new PlanOptions { MaxShardBytes = 96 << 10 },
                Compute = (input, s, a, ct) =>
                {
                    blocks.Add((input.BlockStart, input.BlockEnd));
                    return Kernel(input, ct);
                },
            };
            await using var embedded = Start(pipeline);
            var result = await embedded.ComputeAsync(problem);
            TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, result.Output.Data.Span, $"{rows} rows a head");

            // Up to a panel's rows (256) a K/V head, stacked: one shard per (batch, K/V head), every
            // block (1000 keys: 32 blocks). More: a shard may pack its blocks, so the budget cuts the keys.
            string shards = string.Join(", ", blocks.Select(b => $"[{b.Start}, {b.End})"));
            Assert.True(whole == blocks.All(b => b == (0, 32)), $"{rows} rows a head: shards of key blocks {shards}");
            Assert.True(!whole || blocks.Count == 4, $"{rows} rows a head: {blocks.Count} shards ({shards})");
        }
    }

    [Fact]
    public async Task The_output_is_written_into_the_callers_buffer()
    {
        var (problem, _) = Scenario("padding");
        var buffer = new float[problem.Batch * problem.Heads * problem.QuerySeq * problem.ValueDim];
        Array.Fill(buffer, float.NaN);
        await using var cluster = Start(new PipelineOptions { Workers = 3, MaxMessageBytes = 64 << 10 });
        var plan = ShardPlanner.Plan(problem, 3, new PlanOptions { MaxShardBytes = 64 << 10 });
        var result = await cluster.ComputeAsync(problem, plan, AttentionTensor.FromArray("out", buffer, problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim));
        Assert.True(result.Output.Data.Span.Overlaps(buffer), "the result must be the caller's buffer");
        var single = Attention.Compute(problem);
        TestData.AssertBitwise(single.Output.Data.Span, buffer, "caller's buffer");
        TestData.AssertBitwise(single.Lse, result.Lse, "lse");
    }

    [Theory]
    [InlineData("causal bottom-right")]
    [InlineData("gqa")]
    public async Task Segmented_inputs_and_output_give_the_bits_of_whole_ones(string scenario)
    {
        // Tensors past one buffer are held in segments of whole (batch, head) planes; a sharded job reads them row range by row range.
        var (problem, _) = Scenario(scenario);
        var parts = AttentionProblem.Create(TestData.Segment(problem.Q, 1), TestData.Segment(problem.K, 2), TestData.Segment(problem.V, 1), problem.Options);
        var segments = Enumerable.Range(0, problem.Batch * problem.Heads).Select(_ => (Memory<float>)new float[problem.QuerySeq * problem.ValueDim]).ToArray();
        var output = AttentionTensor.Segmented("out", segments, problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim);
        await using var cluster = Start(new PipelineOptions { Workers = 3, MaxMessageBytes = 64 << 10 });
        var result = await cluster.ComputeAsync(parts, ShardPlanner.Plan(problem, 3, new PlanOptions { MaxShardBytes = 64 << 10 }), output);
        Assert.Same(output, result.Output);
        var single = Attention.Compute(problem);
        for (int b = 0; b < problem.Batch; b++)
        {
            for (int h = 0; h < problem.Heads; h++)
            {
                TestData.AssertBitwise(single.Output.Rows(b, h, 0, problem.QuerySeq).Span, output.Rows(b, h, 0, problem.QuerySeq).Span, $"{scenario}: output plane ({b}, {h})");
            }
        }

        TestData.AssertBitwise(single.Lse, result.Lse, "lse");
        var refused = await Assert.ThrowsAsync<AttentionInputException>(() => new SingleNodeRunner(1).ComputeAsync(parts));
        Assert.Contains("in segments", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Worker_counts_outside_the_bound_are_refused_before_anything_starts()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddedPipeline.Start(new PipelineOptions { Workers = 100_000 }));
        Assert.Contains($"between 1 and {PipelineOptions.MaxWorkers}", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddedPipeline.Start(new PipelineOptions { Workers = 0 }));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"refusing took {clock.Elapsed.TotalSeconds:F1} s");
    }

    private static Kernels.Partials.PartialSet Kernel(ShardInput input, CancellationToken ct)
        => Attention.ComputePartials(input, Kernels.Simd.KernelPath.Auto, ct);

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        private readonly Lock gate = new();

        public void Report(T value)
        {
            lock (gate)
            {
                report(value);
            }
        }
    }
}

/// <summary>
/// The whole pipeline suite again with Akka's <c>serialize-messages = on</c>: every message between
/// the roles goes through the wire codec and back, proving each one is wire-safe and that the bits
/// survive it.
/// </summary>
public sealed class PipelineTestsOverTheWire : PipelineTests
{
    protected override bool OverTheWire => true;

    protected override EmbeddedPipeline Start(PipelineOptions options) => EmbeddedPipeline.Start(options with { ActorConfig = PipelineConfig.SerializeMessages });
}
