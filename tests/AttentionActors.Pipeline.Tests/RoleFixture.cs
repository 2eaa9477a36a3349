using Akka.Actor;
using Akka.TestKit;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Tests;

/// <summary>A small causal job split into key-range shards, with each shard's true partials, for driving one role with probes.</summary>
internal static class RoleFixture
{
    public static readonly JobId Job = new("j");

    /// <summary>The job key the tests' reducers are told; results carry grants made with it, as a coordinator makes them.</summary>
    public static readonly byte[] Key = Grants.NewKey();

    public static byte[] GrantOf(int shardId, int attempt = 1) => Grants.For(Key, Job, shardId, attempt);

    /// <summary>What a coordinator tells the reducer; the test must send it as the coordinator (the reducer takes it from no one else).</summary>
    public static ExpectShards Expect(AttentionGeometry g, IReadOnlyList<Shard> shards, IActorRef client, IActorRef coordinator, MaskBlocks? blocks = null)
        => new(Job, g, shards, client, coordinator, [], blocks, Key);

    /// <summary>A shard as the coordinator sends it, with its data in the message and its attempt's grant.</summary>
    public static ComputeShard Work(AttentionProblem problem, Shard shard, int attempt, IActorRef reducer, IActorRef coordinator, ShardInput? input = null)
        => new(Job, shard, attempt, problem.Geometry, input ?? InputOf(problem, shard), null, GrantOf(shard.Id, attempt), reducer, "", coordinator);

    public static (AttentionProblem Problem, ShardPlan Plan, PartialComputed[] Partials) Computed(int seed)
    {
        var (q, k, v) = TestData.Qkv(seed, 1, 3, 1, 400, 1500, 16, 16);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 });
        var plan = ShardPlanner.Plan(problem, 5, new PlanOptions { MaxShardBytes = 40 << 10 });
        Assert.True(plan.Shards.Any(s => s.BlockStart > 0), "the plan must contain key-range splits");
        var partials = plan.Shards.Select(s => new PartialComputed(Job, s.Id, 1, GrantOf(s.Id), Attention.ComputePartials(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd))).ToArray();
        return (problem, plan, partials);
    }

    public static ShardInput InputOf(AttentionProblem p, Shard s) => ShardInput.Slice(p, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd);

    /// <summary>
    /// Reads a client probe's messages until <see cref="AttentionCompleted"/> (or a failure, which
    /// throws) and assembles the streamed rows; rows never sent stay 0 / −∞.
    /// </summary>
    public static (float[] Output, float[] Lse, List<RowsFinished> Messages) Collect(TestProbe client, AttentionGeometry g)
    {
        var output = new float[g.Batch * g.Heads * g.QuerySeq * g.ValueDim];
        var lse = Enumerable.Repeat(float.NegativeInfinity, g.Batch * g.Heads * g.QuerySeq).ToArray();
        var messages = new List<RowsFinished>();
        while (true)
        {
            var message = client.ExpectMsg<object>();
            switch (message)
            {
                case RowsFinished rows:
                    messages.Add(rows);
                    long row = (((long)rows.Batch * g.Heads) + rows.Head) * g.QuerySeq + rows.RowStart;
                    rows.Output.CopyTo(output, row * g.ValueDim);
                    rows.Lse.CopyTo(lse, row);
                    break;
                case AttentionCompleted:
                    return (output, lse, messages);
                case AttentionFailed failed:
                    throw new InvalidOperationException($"the job failed: {failed.Reason}");
            }
        }
    }

    /// <summary>A local actor that takes every message and does nothing (a stand-in coordinator or reducer that can be stopped).</summary>
    public sealed class Sink : ReceiveActor
    {
        public Sink() => ReceiveAny(_ => { });
    }
}
