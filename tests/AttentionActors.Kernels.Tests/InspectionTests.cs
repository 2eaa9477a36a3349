using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tests;

/// <summary>Entropy, coverage and weight windows against the float64 full weight matrix, and their bits across paths and threads.</summary>
public class InspectionTests
{
    private static readonly KernelPath[] Paths = [KernelPath.Scalar, KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512];

    private static (AttentionProblem Problem, AttentionResult Result, InspectionResult Inspection) Run(int seed, int b, int h, int hk, int nq, int nk, int d, AttentionOptions options, ComputeOptions? settings = null)
    {
        var (q, k, v) = TestData.Qkv(seed, b, h, hk, nq, nk, d, d);
        var problem = AttentionProblem.Create(q, k, v, options);
        var result = Attention.Compute(problem, settings);
        return (problem, result, Inspection.Compute(problem, result.Lse, coverage: true, settings));
    }

    /// <summary>
    /// Entropy is lse − Σ a·s, a difference of two numbers of the size of lse: its float32 error
    /// scales with |lse| as well as |H|. Coverage is held to the output's contract.
    /// </summary>
    private static void AssertAgrees(AttentionProblem p, AttentionResult result, InspectionResult actual, string context)
    {
        var (entropy, coverage) = ReferenceAttention.Inspect(p.Q, p.K, p.Options);
        double worst = double.NegativeInfinity;
        int at = -1;
        for (int i = 0; i < entropy.Length; i++)
        {
            Assert.True(float.IsFinite(actual.Entropy[i]), $"{context}: entropy[{i}] = {actual.Entropy[i]} is not finite");
            double lse = float.IsNegativeInfinity(result.Lse[i]) ? 0 : result.Lse[i];
            double excess = Math.Abs(actual.Entropy[i] - entropy[i]) - (2e-6 + (1e-5 * (Math.Abs(entropy[i]) + Math.Abs(lse))));
            if (excess > worst)
            {
                (worst, at) = (excess, i);
            }
        }

        if (at >= 0)
        {
            Assert.True(worst <= 0, $"{context}: worst entropy [{at}]: {actual.Entropy[at]:R} vs reference {entropy[at]:R} (lse {result.Lse[at]}), over the tolerance by {worst:G3}");
        }

        TestData.AssertClose(actual.Coverage, coverage, $"{context}: coverage");
    }

    [Fact]
    public void Entropy_and_coverage_match_the_full_weight_matrix_for_every_mask_and_awkward_shapes()
    {
        var cases = new (string Name, int B, int H, int Hk, int Nq, int Nk, int D, AttentionOptions Options)[]
        {
            ("dense", 1, 2, 2, 37, 53, 8, new AttentionOptions { BlockSize = 16 }),
            ("causal 3816-style", 1, 5, 5, 381, 381, 12, new AttentionOptions { BlockSize = 32, Causal = true }),
            ("causal bottom-right cross", 2, 4, 2, 70, 200, 16, new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.BottomRight }),
            ("window", 1, 3, 1, 150, 150, 6, new AttentionOptions { BlockSize = 16, Window = (20, 5) }),
            ("key padding with an empty batch", 3, 2, 1, 40, 90, 5, new AttentionOptions { BlockSize = 16, KeyLengths = [90, 0, 33] }),
            ("causal top-left, more queries than keys", 1, 2, 2, 100, 30, 8, new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.TopLeft }),
            ("soft cap and ALiBi", 1, 2, 2, 64, 64, 8, new AttentionOptions { BlockSize = 16, SoftCap = 2f, AlibiSlopes = [0.5f, 0.125f], Causal = true }),
            ("gaussian kernel", 1, 1, 1, 50, 77, 3, new AttentionOptions { BlockSize = 16, Score = ScoreFunction.Gaussian, Sigma = 0.7f }),
            ("cosine", 1, 2, 1, 45, 66, 9, new AttentionOptions { BlockSize = 16, Score = ScoreFunction.Cosine, Temperature = 0.1f }),
        };
        foreach (var (name, b, h, hk, nq, nk, d, options) in cases)
        {
            var (problem, result, inspection) = Run(nq * 31 + nk, b, h, hk, nq, nk, d, options);
            AssertAgrees(problem, result, inspection, name);
        }
    }

    [Fact]
    public void Fully_masked_rows_have_entropy_0_and_give_no_coverage()
    {
        var options = new AttentionOptions { BlockSize = 16, KeyLengths = [0, 25] };
        var (problem, _, inspection) = Run(7, 2, 2, 2, 30, 50, 4, options);
        Assert.All(inspection.Entropy.AsSpan(0, 2 * 30).ToArray(), e => Assert.Equal(0f, e));
        Assert.All(inspection.Coverage!.AsSpan(0, 2 * 50).ToArray(), c => Assert.Equal(0f, c));
        Assert.All(inspection.Coverage!.AsSpan((2 * 50) + 25, 25).ToArray(), c => Assert.Equal(0f, c));

        // Every one of the second batch's 2 heads × 30 rows spreads a total weight of 1 over the 25 visible keys.
        double total = inspection.Coverage!.AsSpan(2 * 50, 2 * 50).ToArray().Sum(c => (double)c);
        Assert.True(Math.Abs(total - (2 * 30)) < 1e-3, $"coverage of the padded batch sums to {total}, expected {2 * 30}");
        Assert.True(problem.Batch == 2);
    }

    [Fact]
    public void Entropy_and_coverage_have_the_same_bits_on_every_path_and_thread_count()
    {
        var options = new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight };
        var (q, k, v) = TestData.Qkv(11, 1, 4, 2, 300, 333, 40, 40);
        var problem = AttentionProblem.Create(q, k, v, options);
        var lse = Attention.Compute(problem).Lse;
        var expected = Inspection.Compute(problem, lse, coverage: true, new ComputeOptions { Threads = 1, KernelPath = KernelPath.Scalar });
        foreach (var path in Paths)
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                var actual = Inspection.Compute(problem, lse, coverage: true, new ComputeOptions { Threads = threads, KernelPath = path });
                TestData.AssertBitwise(expected.Entropy, actual.Entropy, $"entropy {path} {threads} threads");
                TestData.AssertBitwise(expected.Coverage, actual.Coverage, $"coverage {path} {threads} threads");
            }
        }
    }

    [Fact]
    public void Coverage_from_shards_of_any_split_has_the_single_node_bits()
    {
        var cases = new (string Name, int B, int H, int Hk, int Nq, int Nk, AttentionOptions Options)[]
        {
            ("causal GQA, bottom-right", 2, 6, 2, 75, 140, new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.BottomRight }),
            ("window and padding", 2, 3, 3, 97, 97, new AttentionOptions { BlockSize = 16, Window = (20, 5), KeyLengths = [97, 40] }),
            ("dense MQA", 1, 5, 1, 49, 33, new AttentionOptions { BlockSize = 16 }),
        };
        foreach (var (name, b, h, hk, nq, nk, options) in cases)
        {
            var (q, k, v) = TestData.Qkv(nq + nk, b, h, hk, nq, nk, 12, 7);
            var problem = AttentionProblem.Create(q, k, v, options);
            var lse = Attention.Compute(problem).Lse;
            var expected = Inspection.Coverage(problem, lse);
            var g = problem.Geometry;
            int queryBlocks = (nq + g.BlockSize - 1) / g.BlockSize;
            var random = new Random(nq * nk);
            for (int trial = 0; trial < 4; trial++)
            {
                var actual = new float[expected.Length];
                foreach (int path in new[] { 0, 1 })
                {
                    for (int bi = 0; bi < b; bi++)
                    {
                        for (int kvh = 0; kvh < hk; kvh++)
                        {
                            var keyCuts = Cuts(random, g.BlockCount);
                            for (int c = 0; c + 1 < keyCuts.Length; c++)
                            {
                                // Each query head of the group split at its own random query-block cuts, shards in random order.
                                var parts = new List<CoverageParts>();
                                for (int head = kvh * g.GroupSize; head < (kvh + 1) * g.GroupSize; head++)
                                {
                                    var rowCuts = Cuts(random, queryBlocks);
                                    for (int r = 0; r + 1 < rowCuts.Length; r++)
                                    {
                                        int rowStart = rowCuts[r] * g.BlockSize, rowEnd = Math.Min(rowCuts[r + 1] * g.BlockSize, nq);
                                        var input = ShardInput.Slice(problem, bi, head, rowStart, rowEnd - rowStart, keyCuts[c], keyCuts[c + 1]);
                                        var shardLse = lse.AsSpan((int)((((long)bi * h) + head) * nq) + rowStart, rowEnd - rowStart);
                                        parts.Add(Inspection.CoverageOfShard(input, shardLse, path == 0 ? KernelPath.Scalar : KernelPath.Auto));
                                    }
                                }

                                var root = CoverageParts.Combine([.. parts.OrderBy(_ => random.Next())]).Root(Inspection.CoverageLeaves(g));
                                int j0 = keyCuts[c] * g.BlockSize;
                                root.CopyTo(actual.AsSpan((int)((((long)bi * hk) + kvh) * nk) + j0, root.Length));
                            }
                        }
                    }

                    TestData.AssertBitwise(expected, actual, $"{name}, trial {trial}, {(path == 0 ? "scalar" : "auto")} shards");
                }
            }
        }

        static int[] Cuts(Random random, int count)
            => [.. new[] { 0, count }.Concat(Enumerable.Range(1, Math.Max(0, count - 1)).Where(_ => random.Next(3) == 0)).Distinct().Order()];
    }

    [Fact]
    public void A_coverage_shard_that_does_not_start_on_a_query_block_is_refused()
    {
        var (q, k, v) = TestData.Qkv(3, 1, 1, 1, 40, 40, 4, 4);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 16 });
        var input = ShardInput.Slice(problem, 0, 0, 5, 11, 0, 3);
        var error = Assert.Throws<AttentionInputException>(() => Inspection.CoverageOfShard(input, new float[11]));
        Assert.Contains("query blocks of 16 rows", error.Message);
        var wrongLse = Assert.Throws<AttentionInputException>(() => Inspection.CoverageOfShard(ShardInput.Slice(problem, 0, 0, 16, 16, 0, 3), new float[3]));
        Assert.Contains("holds 3 values", wrongLse.Message);
        var nanLse = Assert.Throws<AttentionInputException>(() => Inspection.CoverageOfShard(ShardInput.Slice(problem, 0, 0, 16, 16, 0, 3), Enumerable.Repeat(float.NaN, 16).ToArray()));
        Assert.Contains("row 16", nanLse.Message);
    }

    [Fact]
    public void Pooled_weights_have_the_same_bits_on_any_thread_count_and_match_pooling_the_full_window()
    {
        var (q, k, v) = TestData.Qkv(17, 1, 3, 1, 700, 650, 8, 8);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight });
        var lse = Attention.Compute(problem).Lse;
        foreach (var pooling in new[] { WeightPooling.Mean, WeightPooling.Max })
        {
            var one = Inspection.Weights(problem, lse, 0, null, (13, 690), (7, 640), 37, 29, pooling);
            foreach (int threads in new[] { 2, 3 })
            {
                TestData.AssertBitwise(one, Inspection.Weights(problem, lse, 0, null, (13, 690), (7, 640), 37, 29, pooling, KernelPath.Auto, threads), $"{pooling}, {threads} threads");
            }

            // The same cells pooled here from the unpooled window in float64.
            var full = Inspection.Weights(problem, lse, 0, null, (13, 690), (7, 640), 677, 633, WeightPooling.Mean, KernelPath.Auto, 2);
            var expected = new double[37 * 29];
            var counts = new int[expected.Length];
            if (pooling == WeightPooling.Max)
            {
                Array.Fill(expected, double.NegativeInfinity);
            }

            for (int i = 0; i < 677; i++)
            {
                for (int j = 0; j < 633; j++)
                {
                    int cell = (i * 37 / 677 * 29) + (j * 29 / 633);
                    expected[cell] = pooling == WeightPooling.Max ? Math.Max(expected[cell], full[(i * 633) + j]) : expected[cell] + full[(i * 633) + j];
                    counts[cell]++;
                }
            }

            TestData.AssertClose(one, [.. expected.Select((x, c) => pooling == WeightPooling.Max ? x : x / counts[c])], $"{pooling} cells");
        }
    }

    [Fact]
    public void Weights_shards_of_whole_cells_give_the_bits_of_the_whole_window_on_any_split()
    {
        var cases = new (string Name, int B, int H, int Hk, int Nq, int Nk, AttentionOptions Options, WeightsWindow Window)[]
        {
            ("GQA causal bottom-right, head mean", 1, 4, 2, 300, 420, new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight }, new WeightsWindow(0, null, 7, 290, 3, 400, 37, 29, WeightPooling.Mean)),
            ("GQA causal bottom-right, head mean, max", 1, 4, 2, 300, 420, new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight }, new WeightsWindow(0, null, 7, 290, 3, 400, 37, 29, WeightPooling.Max)),
            ("MQA key padding, one head unpooled", 2, 3, 1, 90, 130, new AttentionOptions { BlockSize = 16, KeyLengths = [130, 61] }, new WeightsWindow(1, 2, 10, 50, 20, 70, 40, 50, WeightPooling.Mean)),
            ("window mask, cells wider than blocks", 1, 2, 2, 200, 200, new AttentionOptions { BlockSize = 16, Window = (30, 10) }, new WeightsWindow(0, null, 0, 200, 0, 200, 5, 3, WeightPooling.Max)),
        };
        var random = new Random(23);
        foreach (var (name, b, h, hk, nq, nk, options, window) in cases)
        {
            var (q, k, v) = TestData.Qkv(name.Length, b, h, hk, nq, nk, 8, 8);
            var problem = AttentionProblem.Create(q, k, v, options);
            var lse = Attention.Compute(problem).Lse;
            var expected = Inspection.Weights(problem, lse, window.Batch, window.Head, (window.RowLo, window.RowHi), (window.ColLo, window.ColHi), window.CellRows, window.CellCols, window.Pooling, KernelPath.Auto, 2);
            var g = problem.Geometry;
            for (int trial = 0; trial < 4; trial++)
            {
                var actual = new float[expected.Length];
                var filled = new int[expected.Length];
                int[] rowCuts = [.. new[] { 0, window.CellRows }.Concat(Enumerable.Range(1, window.CellRows - 1).Where(_ => random.Next(4) == 0)).Distinct().Order()];
                int[] keyCuts = [.. new[] { 0, g.BlockCount }.Concat(Enumerable.Range(1, g.BlockCount - 1).Where(_ => random.Next(3) == 0)).Distinct().Order()];
                for (int r = 0; r + 1 < rowCuts.Length; r++)
                {
                    int rowStart = window.CellRowStart(rowCuts[r]), rowEnd = window.CellRowStart(rowCuts[r + 1]);
                    for (int c = 0; c + 1 < keyCuts.Length; c++)
                    {
                        var input = ShardInput.SliceWeights(problem, lse, window, rowStart, rowEnd - rowStart, keyCuts[c], keyCuts[c + 1]);
                        var cells = Inspection.WeightsOfShard(input, trial % 2 == 0 ? KernelPath.Scalar : KernelPath.Auto);
                        var range = cells.Range;
                        Assert.Equal(range.Count, cells.Values.Length);
                        for (int cr = range.CellRowStart; cr < range.CellRowEnd; cr++)
                        {
                            for (int cc = range.CellColStart; cc < range.CellColEnd; cc++)
                            {
                                int at = (cr * window.CellCols) + cc;
                                actual[at] = cells.Values[((cr - range.CellRowStart) * (range.CellColEnd - range.CellColStart)) + cc - range.CellColStart];
                                filled[at]++;
                            }
                        }
                    }
                }

                int twice = Array.FindIndex(filled, f => f != 1);
                Assert.True(twice < 0, $"{name}, trial {trial}: cell {twice} computed {(twice < 0 ? 1 : filled[twice])} times");
                TestData.AssertBitwise(expected, actual, $"{name}, trial {trial}, {rowCuts.Length - 1} × {keyCuts.Length - 1} shards");
            }
        }
    }

    [Fact]
    public void Weights_of_fewer_keys_than_a_block_match_the_reference_on_a_fresh_thread()
    {
        // A fresh thread has a fresh workspace, sized for this problem's short key block only.
        var (q, k, v) = TestData.Qkv(8, 1, 2, 1, 30, 10, 8, 8);
        var options = new AttentionOptions { BlockSize = 512, Causal = true, Alignment = DiagonalAlignment.BottomRight };
        var problem = AttentionProblem.Create(q, k, v, options);
        float[]? whole = null, shard = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                var lse = Attention.Compute(problem).Lse;
                whole = Inspection.Weights(problem, lse, 0, null, (0, 30), (0, 10), 30, 10);
                shard = Inspection.WeightsOfShard(ShardInput.SliceWeights(problem, lse, new WeightsWindow(0, null, 0, 30, 0, 10, 30, 10, WeightPooling.Mean), 0, 30, 0, 1)).Values;
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        });
        thread.Start();
        thread.Join();
        Assert.True(failure is null, $"the weights of a short key block failed: {failure}");
        TestData.AssertBitwise(whole!, shard!, "one shard against the whole window");
        var expected = new double[30 * 10];
        var weights = new double[10];
        var scores = new double[10];
        for (int h = 0; h < 2; h++)
        {
            for (int i = 0; i < 30; i++)
            {
                ReferenceAttention.WeightRow(q, k, options, 0, h, i, weights, scores);
                for (int j = 0; j < 10; j++)
                {
                    expected[(i * 10) + j] += weights[j] / 2;
                }
            }
        }

        TestData.AssertClose(whole, expected, "head-mean weights with 10 keys in a 512-key block");
    }

    [Fact]
    public void A_weights_shard_that_is_not_whole_cells_or_carries_bad_data_is_refused()
    {
        var (q, k, v) = TestData.Qkv(5, 1, 2, 1, 60, 64, 4, 4);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 16 });
        var lse = Attention.Compute(problem).Lse;
        var window = new WeightsWindow(0, null, 0, 60, 0, 64, 6, 4, WeightPooling.Mean);
        var split = Assert.Throws<AttentionInputException>(() => ShardInput.SliceWeights(problem, lse, window, 0, 15, 0, 4));
        Assert.Contains("not whole cell rows", split.Message);

        var input = ShardInput.SliceWeights(problem, lse, window, 10, 20, 0, 4);
        var shortK = input with { K = input.K[..^1] };
        Assert.Contains("it needs", Assert.Throws<AttentionInputException>(() => Inspection.WeightsOfShard(shortK)).Message);
        var badLse = input.Lse.ToArray();
        badLse[23] = float.NaN;
        var nan = Assert.Throws<AttentionInputException>(() => Inspection.WeightsOfShard(input with { Lse = badLse }));
        Assert.Contains("row 13 (head 1", nan.Message);
        var badQ = input.Q.ToArray();
        badQ[5] = float.PositiveInfinity;
        Assert.Contains("Q[0, 0, 11, 1]", Assert.Throws<AttentionInputException>(() => Inspection.WeightsOfShard(input with { Q = badQ })).Message);
        Assert.Throws<AttentionInputException>(() => problem.Geometry.ForWeights(window with { CellRows = 61 }));
    }

    [Fact]
    public void Weight_windows_match_the_reference_and_whole_rows_sum_to_1()
    {
        var options = new AttentionOptions { BlockSize = 16, Causal = true };
        var (q, k, v) = TestData.Qkv(13, 1, 3, 3, 90, 90, 8, 8);
        var problem = AttentionProblem.Create(q, k, v, options);
        var lse = Attention.Compute(problem).Lse;

        var window = Inspection.Weights(problem, lse, 0, 1, (10, 70), (5, 83), 60, 78);
        var weights = new double[90];
        var scores = new double[90];
        var expected = new double[60 * 78];
        for (int i = 10; i < 70; i++)
        {
            ReferenceAttention.WeightRow(q, k, options, 0, 1, i, weights, scores);
            Array.Copy(weights, 5, expected, (i - 10) * 78, 78);
        }

        TestData.AssertClose(window, expected, "weights of head 1, rows 10:70, keys 5:83");

        var rows = Inspection.Weights(problem, lse, 0, null, (0, 90), (0, 90), 90, 1, WeightPooling.Mean);
        for (int i = 0; i < 90; i++)
        {
            // The mean over the row's 90 cells times 90 is the row sum, averaged over heads.
            double sum = rows[i] * 90.0;
            Assert.True(Math.Abs(sum - 1) < 1e-5, $"row {i}: weights sum to {sum:R}");
        }

        var pooled = Inspection.Weights(problem, lse, 0, 2, (0, 90), (0, 90), 9, 9, WeightPooling.Max);
        var full = Inspection.Weights(problem, lse, 0, 2, (0, 90), (0, 90), 90, 90);
        for (int cell = 0; cell < 81; cell++)
        {
            int r = cell / 9, c = cell % 9;
            float max = 0;
            for (int i = r * 10; i < (r + 1) * 10; i++)
            {
                for (int j = c * 10; j < (c + 1) * 10; j++)
                {
                    max = Math.Max(max, full[(i * 90) + j]);
                }
            }

            Assert.Equal(max, pooled[cell]);
        }
    }

    [Fact]
    public void Entropy_carried_in_the_online_softmax_matches_the_reference_and_leaves_the_output_bits_alone()
    {
        var cases = new (string Name, AttentionOptions Options)[]
        {
            ("dense", new AttentionOptions { BlockSize = 16 }),
            ("causal bottom-right with padding", new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight, KeyLengths = [0, 150] }),
            ("window, soft cap", new AttentionOptions { BlockSize = 16, Window = (30, 4), SoftCap = 3f, Alignment = DiagonalAlignment.TopLeft }),
            ("gaussian", new AttentionOptions { BlockSize = 16, Score = ScoreFunction.Gaussian, Sigma = 0.8f }),
        };
        foreach (var (name, options) in cases)
        {
            var (q, k, v) = TestData.Qkv(name.Length, 2, 4, 2, 140, 190, 12, 7);
            var plain = Attention.Compute(AttentionProblem.Create(q, k, v, options));
            var problem = AttentionProblem.Create(q, k, v, options with { Entropy = true });
            var fused = Attention.Compute(problem);
            Assert.Null(plain.Entropy);
            TestData.AssertBitwise(plain.Output.Data.Span, fused.Output.Data.Span, $"{name}: output with entropy on");
            TestData.AssertBitwise(plain.Lse, fused.Lse, $"{name}: lse with entropy on");
            AssertAgrees(problem, fused, new InspectionResult(fused.Entropy!, Inspection.Compute(problem, fused.Lse, coverage: true).Coverage), $"{name} (fused)");
            foreach (var path in Paths)
            {
                foreach (int threads in new[] { 1, 3 })
                {
                    var other = Attention.Compute(problem, new ComputeOptions { Threads = threads, KernelPath = path });
                    TestData.AssertBitwise(fused.Entropy!, other.Entropy!, $"{name}: fused entropy {path} {threads} threads");
                }
            }
        }
    }
}
