using Akka.Actor;
using Akka.TestKit;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Reduction;

/// <summary>The reducer's coverage pass: tree order whatever the arrival order, and checked subtrees.</summary>
public sealed class CoverageReducerTests : RoleTestKit
{
    private static (AttentionProblem Problem, float[] Lse, ShardPlan Plan, CoverageComputed[] Parts) Computed()
    {
        var (q, k, v) = TestData.Qkv(21, 1, 4, 2, 300, 700, 16, 8);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 });
        var lse = Attention.Compute(problem).Lse;
        var plan = CoveragePlanner.Plan(problem.Geometry, 3, new PlanOptions { MaxShardBytes = 24 << 10 });
        Assert.True(plan.Shards.Any(s => s.RowStart > 0) && plan.Shards.Any(s => s.BlockStart > 0), "the plan must split rows and keys");
        var parts = plan.Shards.Select(s => new CoverageComputed(Job, s.Id, 1, GrantOf(s.Id), Inspection.CoverageOfShard(
            ShardInput.SliceCoverage(problem, lse, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd),
            ShardInput.SliceCoverage(problem, lse, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd).Lse.Span))).ToArray();
        return (problem, lse, plan, parts);
    }

    private (IActorRef Reducer, TestProbe Client, TestProbe Coordinator) Start(string name, AttentionProblem problem, ShardPlan plan)
    {
        var client = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(4096)), name);
        reducer.Tell(Expect(problem.Geometry.ForPass(JobPass.Coverage), plan.Shards, client, coordinator), coordinator);
        return (reducer, client, coordinator);
    }

    private static float[] Collect(TestProbe client, AttentionGeometry g)
    {
        var coverage = new float[g.Batch * g.KvHeads * g.KeySeq];
        while (true)
        {
            switch (client.ExpectMsg<object>())
            {
                case CoverageFinished keys:
                    Assert.True(keys.KeyCount * 4 <= 4096, $"a coverage message of {keys.KeyCount} keys is over the 4096-byte budget");
                    keys.Coverage.CopyTo(coverage, (((long)keys.Batch * g.KvHeads) + keys.KvHead) * g.KeySeq + keys.KeyStart);
                    break;
                case AttentionCompleted:
                    return coverage;
                case AttentionFailed failed:
                    throw new InvalidOperationException($"the job failed: {failed.Reason}");
            }
        }
    }

    [Fact]
    public void Reducer_folds_coverage_in_tree_order_whatever_the_arrival_order_and_drops_repeats()
    {
        var (problem, lse, plan, parts) = Computed();
        var single = Inspection.Coverage(problem, lse);
        var rng = new Random(3);
        for (int trial = 0; trial < 4; trial++)
        {
            var (reducer, client, _) = Start($"coverage-{trial}", problem, plan);
            foreach (var part in parts.Concat(parts.Take(3)).OrderBy(_ => rng.Next()))
            {
                reducer.Tell(part);
            }

            TestData.AssertBitwise(single, Collect(client, problem.Geometry), $"arrival order #{trial}");
        }
    }

    [Fact]
    public void Coverage_that_is_not_the_shards_subtrees_or_not_a_sum_of_weights_is_a_failed_attempt()
    {
        var (problem, _, plan, parts) = Computed();
        var good = parts[0];
        var nodes = good.Parts.Nodes;
        var bad = new (string Why, CoverageParts Parts, string Expect)[]
        {
            ("one node missing", new CoverageParts(nodes[1..], good.Parts.Keys, good.Parts.Values[good.Parts.Keys..]), nodes.Length > 1 ? "tree nodes" : "sums over"),
            ("a key short", new CoverageParts(nodes, good.Parts.Keys - 1), "expected"),
            ("a negative sum", WithValue(good.Parts, -1f), "outside [0"),
            ("NaN", WithValue(good.Parts, float.NaN), "NaN"),
            ("more weight than rows", WithValue(good.Parts, 1e9f), "outside [0"),
        };
        var (reducer, client, coordinator) = Start("bad-coverage", problem, plan);
        foreach (var (why, set, expect) in bad)
        {
            reducer.Tell(new CoverageComputed(Job, good.ShardId, 1, GrantOf(good.ShardId), set));
            var failed = coordinator.FishForMessage<ShardFailed>(_ => true);
            Assert.True(failed.Error.Contains(expect, StringComparison.Ordinal), $"{why}: '{failed.Error}' does not say '{expect}'");
        }

        // Every bad set was refused, none merged: the true sets still complete the job with the single-node bits.
        foreach (var part in parts)
        {
            reducer.Tell(part);
        }

        TestData.AssertBitwise(Inspection.Coverage(problem, Attention.Compute(problem).Lse), Collect(client, problem.Geometry), "after refusals");
    }

    [Fact]
    public void A_coverage_plan_with_overlapping_key_ranges_fails_the_job_before_any_shard()
    {
        var (problem, _, plan, _) = Computed();
        var shards = plan.Shards.ToList();
        var first = shards[0];
        shards.Add(first with { Id = shards.Count, BlockStart = first.BlockStart, BlockEnd = first.BlockEnd + 1 });
        var client = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(4096)), "overlap");
        reducer.Tell(Expect(problem.Geometry.ForPass(JobPass.Coverage), shards, client, coordinator), coordinator);
        var failed = client.ExpectMsg<AttentionFailed>();
        Assert.Contains("overlap", failed.Reason);
        coordinator.ExpectMsg<CancelJob>();
    }

    private static CoverageParts WithValue(CoverageParts parts, float value)
    {
        var values = (float[])parts.Values.Clone();
        values[values.Length / 2] = value;
        return new CoverageParts(parts.Nodes, parts.Keys, values);
    }
}
