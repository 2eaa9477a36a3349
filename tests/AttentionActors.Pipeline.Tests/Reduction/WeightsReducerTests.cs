using Akka.Actor;
using Akka.TestKit;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Wire;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Reduction;

/// <summary>The reducer's weights pass: whole cells forwarded whatever the arrival order, and checked cells and plans.</summary>
public sealed class WeightsReducerTests : RoleTestKit
{
    private static (AttentionProblem Problem, float[] Single, AttentionGeometry Pass, ShardPlan Plan, WeightsComputed[] Cells) Computed()
    {
        var (q, k, v) = TestData.Qkv(22, 1, 4, 2, 300, 700, 16, 8);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 });
        var lse = Attention.Compute(problem).Lse;
        var window = new WeightsWindow(0, null, 11, 300, 0, 690, 70, 50, WeightPooling.Max);
        var g = problem.Geometry.ForWeights(window);
        var plan = WeightsPlanner.Plan(g, 3, new PlanOptions { MaxShardBytes = 48 << 10 });
        Assert.True(plan.Shards.Any(s => s.RowStart > 11) && plan.Shards.Any(s => s.BlockStart > 0), "the plan must split rows and keys");
        var cells = plan.Shards.Select(s => new WeightsComputed(Job, s.Id, 1, GrantOf(s.Id), Inspection.WeightsOfShard(ShardInput.SliceWeights(problem, lse, window, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd)))).ToArray();
        var single = Inspection.Weights(problem, lse, 0, null, (11, 300), (0, 690), 70, 50, WeightPooling.Max);
        return (problem, single, g, plan, cells);
    }

    private (IActorRef Reducer, TestProbe Client, TestProbe Coordinator) Start(string name, AttentionGeometry g, IReadOnlyList<Shard> shards)
    {
        var client = CreateTestProbe();
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(4096)), name);
        reducer.Tell(Expect(g, shards, client, coordinator), coordinator);
        return (reducer, client, coordinator);
    }

    private static float[] Collect(TestProbe client, WeightsWindow window)
    {
        var cells = new float[window.Cells];
        while (true)
        {
            switch (client.ExpectMsg<object>())
            {
                case WeightsFinished band:
                    Assert.True(band.Values.Length * 4 <= 4096, $"a weights message of {band.Values.Length} cells is over the 4096-byte budget");
                    for (int r = 0; r < band.CellRowCount; r++)
                    {
                        band.Values.AsSpan(r * band.CellColCount, band.CellColCount).CopyTo(cells.AsSpan(((band.CellRowStart + r) * window.CellCols) + band.CellColStart));
                    }

                    break;
                case AttentionCompleted:
                    return cells;
                case AttentionFailed failed:
                    throw new InvalidOperationException($"the job failed: {failed.Reason}");
            }
        }
    }

    [Fact]
    public void Reducer_forwards_whole_cells_whatever_the_arrival_order_and_drops_repeats()
    {
        var (_, single, g, plan, cells) = Computed();
        var rng = new Random(5);
        for (int trial = 0; trial < 3; trial++)
        {
            var (reducer, client, _) = Start($"weights-{trial}", g, plan.Shards);
            foreach (var part in cells.Concat(cells.Take(2)).OrderBy(_ => rng.Next()))
            {
                reducer.Tell(part);
            }

            TestData.AssertBitwise(single, Collect(client, g.Weights!), $"arrival order #{trial}");
        }
    }

    [Fact]
    public void Cells_that_are_not_the_shards_own_or_not_weights_are_a_failed_attempt()
    {
        var (_, single, g, plan, cells) = Computed();
        var good = cells[0].Cells;
        var range = good.Range;
        var bad = new (string Why, WeightsCells Cells, string Expect)[]
        {
            ("one cell row short", new WeightsCells(range with { CellRowEnd = range.CellRowEnd - 1 }, good.Values[..(int)(range.Count - (range.CellColEnd - range.CellColStart))]), "it owns"),
            ("a value short", new WeightsCells(range, good.Values[1..]), "carry"),
            ("a negative weight", WithValue(good, -1e-3f), "outside [0, 1]"),
            ("NaN", WithValue(good, float.NaN), "NaN"),
            ("a weight over 1", WithValue(good, 1.5f), "outside [0, 1]"),
        };
        var (reducer, client, coordinator) = Start("bad-weights", g, plan.Shards);
        var codec = new WireCodec((ExtendedActorSystem)Sys);
        foreach (var (why, set, expect) in bad)
        {
            var message = new WeightsComputed(Job, cells[0].ShardId, 1, GrantOf(cells[0].ShardId), set);

            // A count that contradicts its own range never gets past the wire; everything else reaches the reducer, which refuses it.
            if (why == "a value short")
            {
                var refused = Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.ManifestOf(message), codec.Encode(message)));
                Assert.Contains("cell values holds", refused.Message, StringComparison.Ordinal);
                continue;
            }

            reducer.Tell(message);
            var failed = coordinator.FishForMessage<ShardFailed>(_ => true);
            Assert.True(failed.Error.Contains(expect, StringComparison.Ordinal), $"{why}: '{failed.Error}' does not say '{expect}'");
        }

        // Every bad set was refused, none forwarded: the true cells still complete the job with the single-node bits.
        foreach (var part in cells)
        {
            reducer.Tell(part);
        }

        TestData.AssertBitwise(single, Collect(client, g.Weights!), "after refusals");
    }

    [Theory]
    [InlineData("overlap")]
    [InlineData("gap")]
    public void A_weights_plan_that_does_not_own_every_cell_once_fails_the_job_before_any_shard(string flaw)
    {
        var (_, _, g, plan, _) = Computed();
        var shards = plan.Shards.ToList();
        var first = shards[0];
        if (flaw == "overlap")
        {
            shards.Add(first with { Id = shards.Count });
        }
        else
        {
            shards.RemoveAt(0);
        }

        var (_, client, coordinator) = Start($"plan-{flaw}", g, shards);
        var failed = client.ExpectMsg<AttentionFailed>();
        Assert.Contains(flaw == "overlap" ? "twice" : "to no shard", failed.Reason);
        coordinator.ExpectMsg<CancelJob>();
    }

    private static WeightsCells WithValue(WeightsCells cells, float value)
    {
        var values = (float[])cells.Values.Clone();
        values[values.Length / 2] = value;
        return cells with { Values = values };
    }
}
