using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Tests;

public class PlannerTests
{
    /// <summary>Blocks of 128 keys: the shapes of the tests that use them are counted in such blocks.</summary>
    private static readonly AttentionOptions Blocks128 = new() { BlockSize = 128 };

    public static TheoryData<string, int, int, int> Cases => new()
    {
        { "dense", 2, 700, 700 },
        { "causal top-left", 1, 900, 1300 },
        { "causal bottom-right", 2, 1300, 900 },
        { "window", 1, 1500, 1500 },
        { "padding", 3, 600, 600 },
        { "causal window padding", 2, 1000, 1000 },
    };

    internal static AttentionOptions Options(string name) => name switch
    {
        "causal top-left" => new() { Causal = true, Alignment = DiagonalAlignment.TopLeft, BlockSize = 64 },
        "causal bottom-right" => new() { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 64 },
        "window" => new() { Window = (200, 50), BlockSize = 32 },
        "padding" => new() { KeyLengths = [600, 17, 0], BlockSize = 48 },
        "causal window padding" => new() { Causal = true, Window = (300, 0), KeyLengths = [1000, 555], BlockSize = 64 },
        _ => new() { BlockSize = 64 },
    };

    [Fact]
    public void Query_heads_that_share_a_kv_head_take_the_same_keys_one_after_another()
    {
        // A decoding step, 8 query heads over 2 K/V heads: the shards of one K/V head, rows and key
        // blocks are adjacent in the plan (workers take them in its order), heads in order.
        var (q, k, v) = TestData.Qkv(2, 1, 8, 2, 1, 4000, 32, 32);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 64 });
        var plan = ShardPlanner.Plan(problem, 2, new PlanOptions { MaxShardBytes = 64 << 10 });
        var runs = plan.Shards.Chunk(problem.GroupSize).ToList();
        Assert.True(runs.Count > problem.KvHeads, $"{plan.Shards.Count} shards do not split the keys");
        foreach (var run in runs)
        {
            var first = run[0];
            string shown = string.Join("; ", run.Select(s => s.ToString()));
            Assert.Equal(Enumerable.Range(first.Head, problem.GroupSize), run.Select(s => s.Head));
            Assert.True(first.Head % problem.GroupSize == 0, shown);
            Assert.All(run, s => Assert.True(s.Batch == first.Batch && s.RowStart == first.RowStart && s.RowCount == first.RowCount && s.BlockStart == first.BlockStart && s.BlockEnd == first.BlockEnd, shown));
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_visible_pair_is_covered_exactly_once_and_masked_pairs_are_never_sent(string name, int batch, int nq, int nk)
    {
        var (q, k, v) = TestData.Qkv(1, batch, 4, 2, nq, nk, 8, 8);
        var problem = AttentionProblem.Create(q, k, v, Options(name));
        foreach (int workers in new[] { 1, 3, 7, 16 })
        {
            var plan = ShardPlanner.Plan(problem, workers, new PlanOptions { MaxShardBytes = 64 << 10 });
            var cover = new byte[batch * 4 * nq * nk];
            foreach (var s in plan.Shards)
            {
                Assert.True(s.Pairs > 0, $"{s} has no visible pair yet was planned");
                Assert.True(s.Bytes <= 64 << 10, $"{s} needs {s.Bytes} bytes, over the budget");
                for (int i = s.RowStart; i < s.RowEnd; i++)
                {
                    var (lo, hi) = problem.VisibleKeys(s.Batch, i);
                    for (int j = Math.Max(lo, s.BlockStart * problem.BlockSize); j < Math.Min(hi, Math.Min(s.BlockEnd * problem.BlockSize, nk)); j++)
                    {
                        cover[(((((s.Batch * 4) + s.Head) * nq) + i) * nk) + j]++;
                    }
                }
            }

            for (int b = 0; b < batch; b++)
            {
                for (int h = 0; h < 4; h++)
                {
                    for (int i = 0; i < nq; i++)
                    {
                        var (lo, hi) = problem.VisibleKeys(b, i);
                        for (int j = lo; j < hi; j++)
                        {
                            int count = cover[(((((b * 4) + h) * nq) + i) * nk) + j];
                            Assert.True(count == 1, $"{name}, {workers} workers: visible pair (b {b}, h {h}, q {i}, k {j}) covered {count} times");
                        }
                    }
                }
            }
        }
    }

    [Fact]
    public void A_shard_only_spans_key_blocks_its_rows_can_see()
    {
        var (q, k, v) = TestData.Qkv(5, 1, 2, 2, 2000, 2000, 8, 8);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Window = (100, 0), BlockSize = 32 });
        var plan = ShardPlanner.Plan(problem, 4, new PlanOptions { MaxShardBytes = 64 << 10 });
        foreach (var s in plan.Shards)
        {
            var (first, end) = problem.VisibleBlocks(s.Batch, s.RowStart, s.RowCount);
            Assert.True(s.BlockStart >= first && s.BlockEnd <= end, $"{s} reaches outside the visible blocks [{first}, {end})");
        }
    }

    [Theory]
    [InlineData("causal top-left")]
    [InlineData("causal bottom-right")]
    [InlineData("window")]
    [InlineData("causal window padding")]
    public void Masked_plans_keep_the_busiest_worker_within_5_percent_of_the_mean(string name)
    {
        var (q, k, v) = TestData.Qkv(2, 2, 3, 3, 4000, 4000, 16, 16);
        var options = Options(name) with { KeyLengths = name.Contains("padding", StringComparison.Ordinal) ? [4000, 2500] : null, Alignment = DiagonalAlignment.BottomRight };
        var problem = AttentionProblem.Create(q, k, v, options);
        foreach (int workers in new[] { 2, 3, 7, 16 })
        {
            var plan = ShardPlanner.Plan(problem, workers);
            Assert.True(plan.Imbalance <= 1.05, $"{name}, {workers} workers: busiest worker {plan.WorkerLoads.Max():G4} FLOPs is {plan.Imbalance:F3}× the mean over {plan.Shards.Count} shards");
        }
    }

    [Fact]
    public void Whole_heads_come_first_when_they_balance()
    {
        var (q, k, v) = TestData.Qkv(3, 1, 8, 8, 512, 512, 16, 16);
        var plan = ShardPlanner.Plan(AttentionProblem.Create(q, k, v, Blocks128), 4);
        Assert.Equal(8, plan.Shards.Count);
        Assert.All(plan.Shards, s => Assert.True(s.RowCount == 512 && s.BlockStart == 0 && s.BlockEnd == 4, $"{s} is not a whole head"));
    }

    [Fact]
    public void Long_keys_over_the_byte_budget_are_split_into_key_ranges()
    {
        var (q, k, v) = TestData.Qkv(4, 1, 1, 1, 16, 8192, 64, 64);
        var plan = ShardPlanner.Plan(AttentionProblem.Create(q, k, v), 1, new PlanOptions { MaxShardBytes = 1 << 20 });
        Assert.True(plan.Shards.Count >= 4, $"only {plan.Shards.Count} shards");
        Assert.All(plan.Shards, s => Assert.Equal(16, s.RowCount));
        Assert.All(plan.Shards, s => Assert.True(s.Bytes <= 1 << 20, $"{s}: {s.Bytes} bytes"));
    }

    [Fact]
    public void A_plan_that_cannot_keep_every_shard_within_the_budget_is_refused_not_oversized()
    {
        var (q, k, v) = TestData.Qkv(5, 1, 2, 2, 512, 8192, 64, 64);
        var problem = AttentionProblem.Create(q, k, v, Blocks128);

        var error = Assert.Throws<AttentionInputException>(() => ShardPlanner.Plan(problem, 2, new PlanOptions { MaxShardBytes = 256 << 10, MaxShards = 8 }));

        Assert.Contains("more than 8 shards", error.Message, StringComparison.Ordinal);
        var plan = ShardPlanner.Plan(problem, 2, new PlanOptions { MaxShardBytes = 256 << 10 });
        Assert.All(plan.Shards, s => Assert.True(s.Bytes <= 256 << 10, $"{s}: {s.Bytes} bytes"));
    }

    [Fact]
    public void A_key_range_is_cut_where_both_sides_make_the_fewest_tree_nodes()
    {
        // 56 blocks of 128 keys over the budget: halving the pairs would cut at 28 ([0, 28) and [28, 56)
        // are three subtrees each, three partials per row); 32 leaves [0, 32) one subtree and [32, 56) two.
        var (q, k, v) = TestData.Qkv(6, 1, 1, 1, 16, 56 * 128, 64, 64);
        var plan = ShardPlanner.Plan(AttentionProblem.Create(q, k, v, Blocks128), 1, new PlanOptions { MaxShardBytes = 5 << 19 });
        var cuts = plan.Shards.OrderBy(s => s.BlockStart).Select(s => (s.BlockStart, s.BlockEnd)).ToList();
        Assert.True(cuts.SequenceEqual([(0, 32), (32, 56)]), $"key ranges {string.Join(", ", cuts)}");
    }

    [Fact]
    public void Tree_node_counts_match_the_canonical_decomposition()
    {
        for (int start = 0; start < 300; start++)
        {
            for (int end = start; end < 300; end++)
            {
                int counted = ShardPlanner.TreeNodes(start, end), decomposed = Kernels.Partials.CanonicalTree.Decompose(start, end).Length;
                Assert.True(counted == decomposed, $"[{start}, {end}): {counted} nodes counted, {decomposed} in the decomposition");
            }
        }
    }

    public static TheoryData<string> VisibilityCases => new() { "dense", "causal top-left", "causal bottom-right", "window", "padding", "causal window padding", "varlen", "window right only" };

    [Theory]
    [MemberData(nameof(VisibilityCases))]
    public void The_planners_visibility_index_answers_as_the_rows_one_by_one(string name)
    {
        var options = name switch
        {
            "varlen" => new AttentionOptions { SequenceLengths = [new(600, 700), new(3, 650), new(0, 10), new(411, 97)], Causal = true, Alignment = DiagonalAlignment.BottomRight, Window = (150, -1), BlockSize = 32 },
            "window right only" => new AttentionOptions { Window = (-1, 40), Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 },
            _ => Options(name),
        };
        int batch = name is "varlen" ? 4 : name is "padding" ? 3 : 2;
        var g = AttentionGeometry.Create(new TensorShape("Q", batch, 1, 1100, 8), new TensorShape("K", batch, 1, 1100, 8), new TensorShape("V", batch, 1, 1100, 8), options);
        var index = new Visibility(g);
        var random = new Random(name.Length);
        long worst = 0;
        string where = "";
        for (int trial = 0; trial < 3000; trial++)
        {
            int b = random.Next(batch), r0 = random.Next(g.QuerySeq + 1), count = random.Next(g.QuerySeq - r0 + 1);
            int k0 = random.Next(g.BlockCount + 1), k1 = k0 + random.Next(g.BlockCount - k0 + 1);
            long expected = g.VisiblePairs(b, r0, count, k0, k1), actual = index.Pairs(b, r0, count, k0, k1);
            var blocks = g.VisibleBlocks(b, r0, count);
            var indexed = index.Blocks(b, r0, count);
            bool sameBlocks = blocks == indexed || (blocks.First >= blocks.End && indexed.First >= indexed.End);
            long target = random.NextInt64(expected + 1);
            int reached = index.RowReaching(b, r0, count, k0, k1, target);
            bool reachedRight = count == 0 || (g.VisiblePairs(b, r0, reached - r0, k0, k1) >= target && (reached == r0 + 1 || g.VisiblePairs(b, r0, reached - r0 - 1, k0, k1) < target));
            if (Math.Abs(expected - actual) > worst || !sameBlocks || !reachedRight)
            {
                worst = Math.Max(worst, Math.Abs(expected - actual));
                where = $"batch {b}, rows [{r0}, {r0 + count}), blocks [{k0}, {k1}): pairs {actual} (rows one by one: {expected}), blocks {indexed} ({blocks}), {target} pairs reached at row {reached}";
                Assert.True(sameBlocks && reachedRight && worst == 0, where);
            }
        }

        Assert.True(worst == 0, where);
    }
}
