using System.Diagnostics;
using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using static AttentionActors.Pipeline.Tests.RoleFixture;

namespace AttentionActors.Pipeline.Tests.Client;

/// <summary>The client end of a job always completes, and writes only rows it has checked.</summary>
public sealed class JobClientTests : RoleTestKit
{
    private static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(300);

    private (IActorRef Client, Task<AttentionResult> Result, float[] Output) Start(string name, AttentionGeometry g, IActorRef coordinator, IActorRef reducer)
    {
        var output = new float[g.Batch * g.Heads * g.QuerySeq * g.ValueDim];
        var result = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = Sys.ActorOf(Props.Create(() => new JobClient(Job, g, AttentionTensor.FromArray("out", output, g.Batch, g.Heads, g.QuerySeq, g.ValueDim), null, result, Grace)), name);
        client.Tell(new WatchJob(coordinator, reducer));
        return (client, result.Task, output);
    }

    private static async Task<Exception> Faulted(Task<AttentionResult> task, TimeSpan within)
    {
        var clock = Stopwatch.StartNew();
        var finished = await Task.WhenAny(task, Task.Delay(within));
        Assert.True(finished == task, $"the job's task was still waiting {clock.Elapsed.TotalSeconds:F1} s later");
        return await Assert.ThrowsAnyAsync<Exception>(() => task);
    }

    [Theory]
    [InlineData("reducer")]
    [InlineData("coordinator")]
    public async Task Client_fails_promptly_when_its_coordinator_or_reducer_stops(string which)
    {
        var (problem, _, _) = Computed(21);
        var coordinator = Sys.ActorOf(Props.Create(() => new Sink()), $"coordinator-{which}");
        var reducer = Sys.ActorOf(Props.Create(() => new Sink()), $"reducer-{which}");
        var (_, result, _) = Start($"client-{which}", problem.Geometry, coordinator, reducer);
        (which == "reducer" ? reducer : coordinator).Tell(PoisonPill.Instance);
        var error = await Faulted(result, Grace + TimeSpan.FromSeconds(5));
        Assert.IsType<AttentionJobException>(error);
        Assert.Contains($"{which} ", error.Message, StringComparison.Ordinal);
        Assert.Contains("no result came", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Client_cancels_at_once_and_tells_the_coordinator()
    {
        var (problem, _, _) = Computed(22);
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Sink()), "reducer-cancel");
        var output = new float[problem.Q.Length / problem.KeyDim * problem.ValueDim];
        var tcs = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = Sys.ActorOf(Props.Create(() => new JobClient(Job, problem.Geometry, AttentionTensor.FromArray("out", output, problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim), null, tcs, Grace)), "client-cancel");
        client.Tell(new WatchJob(coordinator, reducer));
        client.Tell(new CancelRequested("caller gave up"));
        var error = await Faulted(tcs.Task, TimeSpan.FromSeconds(5));
        Assert.IsType<OperationCanceledException>(error);
        Assert.Equal("caller gave up", coordinator.ExpectMsg<CancelJob>(c => c.Job == Job, TimeSpan.FromSeconds(1)).Reason);
    }

    [Fact]
    public async Task Client_fails_when_the_job_completes_with_rows_missing()
    {
        var (problem, plan, partials) = Computed(23);
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer()), "reducer-missing");
        var probe = CreateTestProbe();
        var (client, result, _) = Start("client-missing", problem.Geometry, probe, reducer);

        // A completion notice with no rows before it: the client must not report success.
        client.Tell(new AttentionCompleted(Job, 0), reducer);
        var error = await Faulted(result, TimeSpan.FromSeconds(5));
        Assert.Contains("output rows never arrived", error.Message, StringComparison.Ordinal);
        Assert.Contains("first: row", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Client_writes_streamed_rows_and_fills_rows_that_see_no_key()
    {
        var (q, k, v) = TestData.Qkv(24, 3, 2, 2, 300, 500, 16, 24);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { KeyLengths = [500, 0, 130], BlockSize = 64 });
        var plan = Planning.ShardPlanner.Plan(problem, 3, new Planning.PlanOptions { MaxShardBytes = 48 << 10 });
        var reducer = Sys.ActorOf(Props.Create(() => new Reducer(8192)), "reducer-rows");
        var coordinator = Sys.ActorOf(Props.Create(() => new Sink()), "coordinator-rows");
        var (client, result, output) = Start("client-rows", problem.Geometry, coordinator, reducer);
        Array.Fill(output, 42f);
        reducer.Tell(Expect(problem.Geometry, plan.Shards, client, coordinator), coordinator);
        foreach (var s in plan.Shards)
        {
            reducer.Tell(new PartialComputed(Job, s.Id, 1, GrantOf(s.Id), Attention.ComputePartials(problem, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd)));
        }

        var done = await result.WaitAsync(TimeSpan.FromSeconds(10));
        var single = Attention.Compute(problem);
        Assert.True(done.Output.Data.Span.Overlaps(output), "the result must be the caller's buffer");
        TestData.AssertBitwise(single.Output.Data.Span, output, "client output");
        TestData.AssertBitwise(single.Lse, done.Lse, "client lse");
    }

    [Fact]
    public async Task Client_keeps_rows_and_the_completion_that_arrive_before_it_is_told_whom_to_watch()
    {
        // The embedded pipeline tells the client its coordinator and reducer only after creating the
        // coordinator, which may already have the reducer streaming rows: all of them, and even the
        // completion, can reach the client before the WatchJob does (sent here in that order).
        var (problem, _, _) = Computed(26);
        var g = problem.Geometry;
        var coordinator = Sys.ActorOf(Props.Create(() => new Sink()), "coordinator-early");
        var reducer = Sys.ActorOf(Props.Create(() => new Sink()), "reducer-early");
        var output = new float[g.Batch * g.Heads * g.QuerySeq * g.ValueDim];
        var tcs = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = Sys.ActorOf(Props.Create(() => new JobClient(Job, g, AttentionTensor.FromArray("out", output, g.Batch, g.Heads, g.QuerySeq, g.ValueDim), null, tcs, Grace)), "client-early");
        var single = Attention.Compute(problem);
        int dv = g.ValueDim;
        long sent = 0;
        for (int b = 0; b < g.Batch; b++)
        {
            for (int h = 0; h < g.Heads; h++)
            {
                long first = (((long)b * g.Heads) + h) * g.QuerySeq;
                var rows = single.Output.Data.Span.Slice((int)(first * dv), g.QuerySeq * dv).ToArray();
                var lse = single.Lse.AsSpan((int)first, g.QuerySeq).ToArray();
                client.Tell(new RowsFinished(Job, b, h, 0, g.QuerySeq, rows, lse), reducer);
                sent += g.QuerySeq;
            }
        }

        client.Tell(new AttentionCompleted(Job, sent), reducer);
        client.Tell(new WatchJob(coordinator, reducer));
        var finished = await Task.WhenAny(tcs.Task, Task.Delay(TimeSpan.FromSeconds(10)));
        Assert.True(finished == tcs.Task, "the job never completed: rows and completion that came before the WatchJob were dropped");
        var done = await tcs.Task;
        TestData.AssertBitwise(single.Output.Data.Span, output, "client output");
        TestData.AssertBitwise(single.Lse, done.Lse, "client lse");
    }

    [Fact]
    public async Task Client_rejects_a_repeated_row_with_different_bits()
    {
        var (problem, _, _) = Computed(25);
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Sink()), "reducer-conflict");
        var (client, result, _) = Start("client-conflict", problem.Geometry, coordinator, reducer);
        int dv = problem.ValueDim;
        client.Tell(new RowsFinished(Job, 0, 1, 10, 2, new float[2 * dv], [0.5f, 0.5f]), reducer);
        client.Tell(new RowsFinished(Job, 0, 1, 10, 2, new float[2 * dv], [0.5f, 0.5f]), reducer);
        client.Tell(new RowsFinished(Job, 0, 1, 11, 1, Enumerable.Repeat(1f, dv).ToArray(), [0.5f]), reducer);
        var error = await Faulted(result, TimeSpan.FromSeconds(5));
        Assert.Contains("two different results for row 11 of batch 0, head 1", error.Message, StringComparison.Ordinal);
        coordinator.FishForMessage<CancelJob>(c => c.Job == Job);
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "head out of range", "outside the output" },
        { "short output", "expected" },
        { "nan output", "received output NaN" },
        { "+inf lse", "log-sum-exp Infinity" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public async Task Client_rejects_malformed_rows(string kind, string expected)
    {
        var (problem, _, _) = Computed(26);
        var coordinator = CreateTestProbe();
        var reducer = Sys.ActorOf(Props.Create(() => new Sink()), $"reducer-{kind.Replace(' ', '-').Replace('+', 'p')}");
        var (client, result, _) = Start($"client-{kind.Replace(' ', '-').Replace('+', 'p')}", problem.Geometry, coordinator, reducer);
        int dv = problem.ValueDim;
        var rows = kind switch
        {
            "head out of range" => new RowsFinished(Job, 0, problem.Heads, 0, 1, new float[dv], [0f]),
            "short output" => new RowsFinished(Job, 0, 0, 0, 2, new float[dv], [0f, 0f]),
            "nan output" => new RowsFinished(Job, 0, 0, 0, 1, [.. new float[dv - 1], float.NaN], [0f]),
            _ => new RowsFinished(Job, 0, 0, 0, 1, new float[dv], [float.PositiveInfinity]),
        };
        client.Tell(rows, reducer);
        var error = await Faulted(result, TimeSpan.FromSeconds(5));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }
}
