using Akka.Actor;
using Akka.TestKit;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Reduction;

public sealed class ReducerTests : RoleTestKit
{
    private (IActorRef Reducer, TestProbe Client, TestProbe Coordinator) Start(string name, AttentionProblem problem, Planning.ShardPlan plan, int maxMessageBytes = PipelineOptions.DefaultMaxMessageBytes)
    {
        var client = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(maxMessageBytes)), name);
        reducer.Tell(Expect(problem.Geometry, plan.Shards, client, coordinator), coordinator);
        return (reducer, client, coordinator);
    }

    [Fact]
    public void Reducer_merges_partials_in_tree_order_whatever_the_arrival_order()
    {
        var (problem, plan, partials) = Computed(1);
        var single = Attention.Compute(problem);
        var rng = new Random(5);
        for (int trial = 0; trial < 5; trial++)
        {
            var (reducer, client, _) = Start($"reducer-{trial}", problem, plan);
            foreach (var p in partials.OrderBy(_ => rng.Next()))
            {
                reducer.Tell(p);
            }

            var (output, lse, _) = Collect(client, problem.Geometry);
            TestData.AssertBitwise(single.Output.Data.Span, output, $"arrival order #{trial}");
            TestData.AssertBitwise(single.Lse, lse, $"arrival order #{trial}, lse");
        }
    }

    [Fact]
    public void Reducer_streams_rows_in_messages_within_the_budget()
    {
        var (problem, plan, partials) = Computed(7);
        const int budget = 1024;
        var (reducer, client, _) = Start("streaming", problem, plan, budget);
        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var (output, _, messages) = Collect(client, problem.Geometry);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, output, "streamed rows");
        int largest = messages.Max(m => 4 * (m.Output.Length + m.Lse.Length));
        Assert.True(largest <= budget, $"a rows message carried {largest} bytes, over the {budget}-byte budget");
        int perMessage = budget / (4 * (problem.ValueDim + 1));
        Assert.True(messages.Count >= problem.Heads * problem.QuerySeq / perMessage, $"{messages.Count} messages for {problem.Heads * problem.QuerySeq} rows of at most {perMessage} each");
        Assert.Equal(problem.Heads * problem.QuerySeq, messages.Sum(m => m.RowCount));
    }

    [Fact]
    public void Reducer_drops_a_duplicate_shard_by_id()
    {
        var (problem, plan, partials) = Computed(2);
        var (reducer, client, coordinator) = Start("dedupe", problem, plan);
        reducer.Tell(partials[0]);

        // A second delivery of shard 0 carrying different (but well-formed) numbers must change nothing.
        var first = partials[0].Partials;
        var tampered = new PartialSet(first.Nodes, first.Rows, first.ValueDim, (float[])first.M.Clone(), (float[])first.L.Clone(), first.O.Select(x => x + 1f).ToArray());
        reducer.Tell(partials[0] with { Attempt = 2, Grant = GrantOf(partials[0].ShardId, 2), Partials = tampered });
        foreach (var p in partials.Skip(1))
        {
            reducer.Tell(p);
        }

        var (output, _, _) = Collect(client, problem.Geometry);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, output, "after a duplicate");
        var merged = new List<int>();
        while (merged.Count < plan.Shards.Count)
        {
            merged.Add(coordinator.ExpectMsg<ShardMerged>().ShardId);
        }

        Assert.Equal(plan.Shards.Count, merged.Distinct().Count());
        coordinator.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Reducer_reports_invalid_partials_as_a_failed_shard_and_never_merges_them()
    {
        var (problem, plan, partials) = Computed(3);
        var (reducer, client, coordinator) = Start("validating", problem, plan);
        var bad = partials[1].Partials;
        var poisoned = new PartialSet(bad.Nodes, bad.Rows, bad.ValueDim, bad.M, bad.L, (float[])bad.O.Clone());
        poisoned.O[5] = float.NaN;
        reducer.Tell(partials[1] with { Partials = poisoned });
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal(partials[1].ShardId, failed.ShardId);
        Assert.Contains("NaN", failed.Error, StringComparison.Ordinal);

        reducer.Tell(partials[1] with { Partials = new PartialSet(bad.Nodes, bad.Rows - 1, bad.ValueDim) });
        Assert.Contains("rows", coordinator.ExpectMsg<ShardFailed>().Error, StringComparison.Ordinal);

        // The real partials are still accepted afterwards and the result is exact.
        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var (output, _, _) = Collect(client, problem.Geometry);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, output, "after rejected partials");
    }

    public static TheoryData<string> TooLittle => ["no nodes", "first node only", "a node split in two", "identity for a row that sees keys"];

    [Theory]
    [MemberData(nameof(TooLittle))]
    public void Reducer_rejects_partials_that_are_not_the_canonical_nodes_of_the_shard(string kind)
    {
        var (problem, plan, partials) = Computed(8);
        var (reducer, client, coordinator) = Start($"too-little-{kind.Replace(' ', '-')}", problem, plan);
        var target = partials.First(p => p.Partials.Nodes.Length >= 2 && p.Partials.Nodes.Any(n => n.Level > 0));
        var real = target.Partials;
        PartialSet forged = kind switch
        {
            "no nodes" => new PartialSet([], real.Rows, real.ValueDim),
            "first node only" => new PartialSet([real.Nodes[0]], real.Rows, real.ValueDim, real.M[..real.Rows], real.L[..real.Rows], real.O[..(real.Rows * real.ValueDim)]),
            "a node split in two" => SplitFirstNode(real),
            _ => WithIdentityRow(real),
        };
        reducer.Tell(target with { Partials = forged });
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal(target.ShardId, failed.ShardId);
        client.FishForMessage<JobProgress>(_ => true);
        client.ExpectNoMsg(TimeSpan.FromMilliseconds(100));

        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var (output, _, _) = Collect(client, problem.Geometry);
        TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, output, $"after a forged set ({kind})");
    }

    [Fact]
    public void A_shard_holding_every_block_its_rows_see_sends_their_root_and_its_nodes_unmerged_are_refused()
    {
        // Causal, every row range small enough to hold all its keys: the planner cuts rows, not keys.
        var (q, k, v) = TestData.Qkv(10, 1, 3, 1, 300, 300, 16, 16);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, BlockSize = 16 });
        var plan = Planning.ShardPlanner.Plan(problem, 4);
        var partials = plan.Shards.Select(s => new PartialComputed(Job, s.Id, 1, GrantOf(s.Id), Attention.ComputePartials(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd))).ToArray();
        var g = problem.Geometry;
        var root = new TreeNode(CanonicalTree.Height(g.BlockCount), 0);
        var shards = plan.Shards.ToDictionary(s => s.Id);
        int Visible(Planning.Shard s)
        {
            var (first, end) = g.VisibleBlocks(s.Batch, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd);
            return CanonicalTree.Decompose(first, end).Length;
        }

        // Whole row ranges of the causal plan come back as one root per row, however many nodes their keys span.
        var target = partials.First(p => p.Partials.Nodes is [var only] && only == root && Visible(shards[p.ShardId]) >= 2);
        long sent = partials.Sum(p => (long)p.Partials.Nodes.Length * p.Partials.Rows);
        long unmerged = plan.Shards.Sum(s => (long)Visible(s) * s.RowCount);
        Assert.True(sent < unmerged, $"partial rows sent {sent}, the visible nodes hold {unmerged}");

        // The same keys as the shard's canonical nodes, each computed as a shard of its own: right numbers, wrong shape.
        var s = shards[target.ShardId];
        var (first, end) = g.VisibleBlocks(s.Batch, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd);
        var pieces = CanonicalTree.Decompose(first, end).Select(n => Attention.ComputePartials(problem, s.Batch, s.Head, s.RowStart, s.RowCount, (int)n.Start, (int)Math.Min(n.End, g.BlockCount))).ToList();
        var forged = new PartialSet([.. pieces.SelectMany(p => p.Nodes)], s.RowCount, g.PartialWidth, [.. pieces.SelectMany(p => p.M)], [.. pieces.SelectMany(p => p.L)], [.. pieces.SelectMany(p => p.O)]);
        var (reducer, client, coordinator) = Start("root-unmerged", problem, plan);
        reducer.Tell(target with { Partials = forged });
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal(target.ShardId, failed.ShardId);
        Assert.Contains($"canonical nodes are [{root}]", failed.Error, StringComparison.Ordinal);

        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var (output, lse, _) = Collect(client, g);
        var single = Attention.Compute(problem);
        TestData.AssertBitwise(single.Output.Data.Span, output, "roots from whole shards");
        TestData.AssertBitwise(single.Lse, lse, "roots from whole shards, lse");
    }

    /// <summary>A causal problem with a mask that hides key blocks [8, 16) from rows below 200 and row 250 from every key.</summary>
    private static (AttentionProblem Problem, Planning.ShardPlan Plan, PartialComputed[] Partials) Masked()
    {
        var (q, k, v) = TestData.Qkv(21, 1, 2, 1, 300, 700, 16, 16);
        var values = new float[300 * 700];
        for (int i = 0; i < 300; i++)
        {
            for (int j = 0; j < 700; j++)
            {
                values[(i * 700) + j] = i == 250 || (i < 200 && j >= 256 && j < 512) ? float.NegativeInfinity : 0f;
            }
        }

        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 }, AttentionMask.Additive(values, 1, 1, 300, 700));
        var plan = Planning.ShardPlanner.Plan(problem, 5, new Planning.PlanOptions { MaxShardBytes = 40 << 10 });
        var partials = plan.Shards.Select(s => new PartialComputed(Job, s.Id, 1, GrantOf(s.Id), Attention.ComputePartials(InputOf(problem, s)))).ToArray();
        return (problem, plan, partials);
    }

    [Fact]
    public void With_a_mask_the_reducer_accepts_nodes_the_mask_hides_and_refuses_an_identity_for_one_it_leaves()
    {
        var (problem, plan, partials) = Masked();
        var blocks = MaskBlocks.Of(problem.Geometry, problem.Mask!);
        var client = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(PipelineOptions.DefaultMaxMessageBytes)), "masked");
        reducer.Tell(Expect(problem.Geometry, plan.Shards, client, coordinator, blocks), coordinator);

        // A worker that skipped the keys of a node the mask leaves visible sends the identity there.
        var target = partials.First(p => Enumerable.Range(0, p.Partials.Rows * p.Partials.Nodes.Length).Any(at => p.Partials.L[at] >= 1));
        reducer.Tell(target with { Partials = WithIdentityRow(target.Partials) });
        var failed = coordinator.ExpectMsg<ShardFailed>();
        Assert.Equal(target.ShardId, failed.ShardId);
        Assert.Contains("needs finite m", failed.Error, StringComparison.Ordinal);

        foreach (var p in partials)
        {
            reducer.Tell(p);
        }

        var (output, lse, _) = Collect(client, problem.Geometry);
        var single = Attention.Compute(problem);
        TestData.AssertBitwise(single.Output.Data.Span, output, "masked job");
        TestData.AssertBitwise(single.Lse, lse, "masked job, lse");
        Assert.True(float.IsNegativeInfinity(lse[250]), $"row 250 is fully masked but has lse {lse[250]}");
    }

    [Fact]
    public void A_masked_job_without_its_block_map_is_refused_before_any_partial_is_merged()
    {
        var (problem, plan, _) = Masked();
        var (_, client, coordinator) = Start("masked-no-map", problem, plan);
        Assert.Contains("no mask block map", client.ExpectMsg<AttentionFailed>().Reason, StringComparison.Ordinal);
        coordinator.ExpectMsg<CancelJob>();
    }

    [Fact]
    public void Reducer_that_stops_tells_the_clients_of_its_jobs()
    {
        var (problem, plan, partials) = Computed(9);
        var (reducer, client, coordinator) = Start("stopping", problem, plan);
        reducer.Tell(partials[0]);
        reducer.Tell(PoisonPill.Instance);
        var failed = client.FishForMessage<AttentionFailed>(_ => true);
        Assert.Contains("reducer stopped", failed.Reason, StringComparison.Ordinal);
        coordinator.FishForMessage<CancelJob>(_ => true);
    }

    /// <summary>Replaces the first node of level ≥ 1 by its two children (same keys, but not the canonical nodes).</summary>
    private static PartialSet SplitFirstNode(PartialSet real)
    {
        int at = Array.FindIndex(real.Nodes, n => n.Level > 0);
        var node = real.Nodes[at];
        var nodes = real.Nodes.ToList();
        nodes.RemoveAt(at);
        nodes.InsertRange(at, [new TreeNode(node.Level - 1, 2 * node.Index), new TreeNode(node.Level - 1, (2 * node.Index) + 1)]);
        var set = new PartialSet([.. nodes], real.Rows, real.ValueDim);
        Array.Fill(set.M, 0f);
        Array.Fill(set.L, 1f);
        return set;
    }

    /// <summary>The real set with one row of one node replaced by the identity, as a worker that skipped keys would send.</summary>
    private static PartialSet WithIdentityRow(PartialSet real)
    {
        var m = (float[])real.M.Clone();
        var l = (float[])real.L.Clone();
        int row = Array.FindIndex(l, x => x >= 1);
        m[row] = float.NegativeInfinity;
        l[row] = 0;
        return new PartialSet(real.Nodes, real.Rows, real.ValueDim, m, l, real.O);
    }
}
