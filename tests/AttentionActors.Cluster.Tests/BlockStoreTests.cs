using Akka.Actor;
using AttentionActors.Cluster.Workers;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Cluster.Tests;

/// <summary>A worker node's store of fetched blocks: each part fetched once while held, never over budget, gone with its job, and the same data as a whole-shard fetch.</summary>
public sealed class BlockStoreTests
{
    private static readonly JobId Job = new("store-test");

    private static AttentionProblem Problem()
    {
        var (q, k, v) = TestData.Qkv(31, 1, 4, 2, 300, 300, 16, 12);
        return AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, BlockSize = 32 });
    }

    private static ComputeShard Work(AttentionProblem p, int head, int rowStart, int rowCount, int blockStart, int blockEnd, JobId? job = null)
        => new(job ?? Job, new Shard(7, 0, head, rowStart, rowCount, blockStart, blockEnd, 0, 0, 0), 1, p.Geometry, null, new DataRef("127.0.0.1:1", new byte[32]), [], ActorRefs.Nobody, "", ActorRefs.Nobody);

    /// <summary>A store over <paramref name="p"/>'s tensors that records every part it was asked for.</summary>
    private static (BlockStore Store, List<Shard> Asked) Over(AttentionProblem p, long budget)
    {
        var asked = new List<Shard>();
        var store = new BlockStore(budget, (work, part, _) =>
        {
            lock (asked)
            {
                asked.Add(part);
            }

            return ShardInput.Slice(p, part.Batch, part.Head, part.RowStart, part.RowCount, part.BlockStart, part.BlockEnd);
        });
        return (store, asked);
    }

    private static void AssertSameData(AttentionProblem p, ShardInput input, string what)
    {
        var whole = ShardInput.Slice(p, input.Batch, input.Head, input.RowStart, input.RowCount, input.BlockStart, input.BlockEnd);
        TestData.AssertBitwise(whole.Q.Span, input.Q.Span, $"{what}: Q");
        TestData.AssertBitwise(whole.K.Span, input.K.Span, $"{what}: K");
        TestData.AssertBitwise(whole.V.Span, input.V.Span, $"{what}: V");
    }

    [Fact]
    public void Shards_of_one_key_head_fetch_each_block_once_and_get_the_data_of_a_whole_fetch()
    {
        var p = Problem();
        var (store, asked) = Over(p, 1 << 20);
        AssertSameData(p, store.Fetch(Work(p, 0, 0, 100, 0, 4), default), "first shard");

        // Head 1 shares key head 0: blocks 0-3 are here, 4-6 are fetched in one run; rows [100, 200) are new.
        AssertSameData(p, store.Fetch(Work(p, 1, 100, 100, 2, 7), default), "second shard");
        Assert.Equal(
            ["rows 0+100 blocks [0, 0)", "rows 0+0 blocks [0, 4)", "rows 100+100 blocks [0, 0)", "rows 0+0 blocks [4, 7)"],
            asked.Select(s => $"rows {s.RowStart}+{s.RowCount} blocks [{s.BlockStart}, {s.BlockEnd})"));

        // The same rows again: nothing is fetched.
        AssertSameData(p, store.Fetch(Work(p, 1, 100, 100, 0, 7), default), "third shard");
        Assert.Equal(4, asked.Count);
        Assert.Equal((9L, 10L), store.Counts);
    }

    [Fact]
    public void A_store_over_its_budget_evicts_the_oldest_never_grows_and_fetches_evicted_blocks_again()
    {
        var p = Problem();
        long blockBytes = 4L * 32 * (16 + 12);
        var (store, asked) = Over(p, 3 * blockBytes);
        var rng = new Random(5);
        for (int trial = 0; trial < 40; trial++)
        {
            int start = rng.Next(0, 9), end = rng.Next(start + 1, 11);
            int rowStart = rng.Next(0, 250);
            AssertSameData(p, store.Fetch(Work(p, rng.Next(0, 4), rowStart, rng.Next(1, 300 - rowStart), start, end), default), $"trial {trial}");
            Assert.True(store.Bytes <= store.Budget, $"trial {trial}: the store holds {store.Bytes} bytes, over its {store.Budget}");
        }

        // Blocks 0-9 of key head 0 no longer fit together: fetching them twice fetches the first ones again.
        int before = asked.Count;
        store.Fetch(Work(p, 0, 0, 1, 0, 10), default);
        store.Fetch(Work(p, 0, 0, 1, 0, 10), default);
        Assert.True(asked.Skip(before).Count(s => s.RowCount == 0) >= 2, "evicted blocks were not fetched again");
    }

    [Fact]
    public void A_jobs_parts_go_when_it_ends_and_parts_arriving_after_are_not_kept()
    {
        var p = Problem();
        var (store, _) = Over(p, 1 << 20);
        var other = new JobId("other-job");
        store.Fetch(Work(p, 0, 0, 50, 0, 3), default);
        store.Fetch(Work(p, 0, 0, 50, 0, 3, other), default);
        store.Forget(Job);
        Assert.Equal([other], store.Jobs);

        // A shard of the ended job that began late still gets its data, which is not kept.
        AssertSameData(p, store.Fetch(Work(p, 2, 10, 20, 1, 5), default), "late shard");
        Assert.Equal([other], store.Jobs);
        store.Forget(other);
        Assert.Empty(store.Jobs);
        Assert.Equal(0, store.Bytes);
    }

    [Fact]
    public async Task Two_shards_that_need_the_same_missing_blocks_wait_for_one_fetch()
    {
        var p = Problem();
        int fetches = 0;
        using var release = new ManualResetEventSlim();
        var store = new BlockStore(1 << 20, (work, part, ct) =>
        {
            if (part.RowCount == 0)
            {
                Interlocked.Increment(ref fetches);
                release.Wait(TimeSpan.FromSeconds(10), ct);
            }

            return ShardInput.Slice(p, part.Batch, part.Head, part.RowStart, part.RowCount, part.BlockStart, part.BlockEnd);
        });
        var first = Task.Run(() => store.Fetch(Work(p, 0, 0, 10, 0, 5), default));
        SpinWait.SpinUntil(() => Volatile.Read(ref fetches) == 1, TimeSpan.FromSeconds(10));
        var second = Task.Run(() => store.Fetch(Work(p, 1, 20, 10, 0, 5), default));
        await Task.Delay(100);
        release.Set();
        AssertSameData(p, await first, "first");
        AssertSameData(p, await second, "second");
        Assert.Equal(1, fetches);
    }

    [Fact]
    public void A_failed_fetch_fails_every_shard_waiting_for_it_and_leaves_nothing_behind()
    {
        var p = Problem();
        var store = new BlockStore(1 << 20, (work, part, _) => throw new PeerUnreachableException("the client is gone"));
        var ex = Assert.Throws<PeerUnreachableException>(() => store.Fetch(Work(p, 0, 0, 10, 0, 5), default));
        Assert.Contains("client is gone", ex.Message, StringComparison.Ordinal);
        Assert.Empty(store.Jobs);
        Assert.Equal(0, store.Bytes);
    }

    [Fact]
    public void A_job_with_an_explicit_mask_fetches_whole_shards()
    {
        var (q, k, v) = TestData.Qkv(32, 1, 2, 1, 64, 64, 8, 8);
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 16 }, AttentionMask.Additive(new float[64 * 64], 1, 1, 64, 64));
        var (store, asked) = Over(p, 1 << 20);
        var input = store.Fetch(Work(p, 1, 0, 64, 0, 4), default);
        Assert.Equal(new Shard(7, 0, 1, 0, 64, 0, 4, 0, 0, 0), Assert.Single(asked));
        Assert.Equal(64 * 8, input.Q.Length);
        Assert.Empty(store.Jobs);
    }

    [Fact]
    public void A_shard_computed_chunk_by_chunk_from_the_store_has_the_bits_of_computing_it_whole()
    {
        var (q, k, v) = TestData.Qkv(33, 1, 2, 1, 700, 700, 16, 16);
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true, BlockSize = 16 });
        var rng = new Random(3);
        int chunkedTrials = 0;
        for (int trial = 0; trial < 12; trial++)
        {
            // A store small enough to evict, and shard estimates small enough to make chunks of 1 to 8 blocks.
            var (store, _) = Over(p, rng.Next(0, 4) * 4L * 16 * 32);
            int rowStart = rng.Next(0, 600), rows = rng.Next(1, 100), start = rng.Next(0, 20), end = rng.Next(start + 1, p.BlockCount + 1);
            var work = Work(p, 1, rowStart, rows, start, end) with { Shard = new Shard(7, 0, 1, rowStart, rows, start, end, 0, 0, 2L * 4 * 16 * 32 << rng.Next(0, 4)) };
            var whole = Attention.ComputePartials(p, 0, 1, rowStart, rows, start, end);
            var chunked = store.ComputeInChunks(work, (input, _, _, ct) => Attention.ComputePartials(input, Kernels.Simd.KernelPath.Auto, ct), default);
            if (chunked is null)
            {
                Assert.False(BlockStore.Chunks(work), $"trial {trial}: a shard of more than one chunk was not computed in chunks");
                continue;
            }

            TestData.AssertSamePartials(whole, chunked, $"trial {trial}");
            chunkedTrials++;
        }

        Assert.True(chunkedTrials >= 6, $"only {chunkedTrials} of 12 shards were computed in chunks");
    }

    [Fact]
    public void A_client_store_refuses_block_and_row_ranges_outside_the_job_by_name_and_serves_those_inside()
    {
        var p = Problem();
        var key = new byte[32];
        key[0] = 7;
        var store = new Client.TensorStore(64 << 20);
        store.Add(Job, new Client.TensorStore.Entry(key, p.Geometry, s => ShardInput.Slice(p, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd)));
        Shard Part(int head, int rowStart, int rowCount, int blockStart, int blockEnd) => new(7, 0, head, rowStart, rowCount, blockStart, blockEnd, 0, 0, 0);

        foreach (var (part, named) in new[]
        {
            (Part(0, 0, 0, 5, p.Geometry.BlockCount + 1), "key blocks [5, 11)"),
            (Part(0, 0, 0, 3, 2), "key blocks [3, 2)"),
            (Part(0, 290, 20, 0, 0), "rows [290, 310)"),
            (Part(4, 0, 10, 0, 0), "head 4"),
            (Part(0, -1, 10, 0, 0), "rows [-1, 9)"),
        })
        {
            var answer = store.Serve(new FetchShard(Job, part), key);
            Assert.True(answer.Refusal is not null, $"{part} was served");
            Assert.Contains(named, answer.Refusal, StringComparison.Ordinal);
            Assert.Contains(Job.ToString(), answer.Refusal, StringComparison.Ordinal);
        }

        Assert.Null(store.Serve(new FetchShard(Job, Part(1, 0, 0, 2, 6)), key).Refusal);
        Assert.Null(store.Serve(new FetchShard(Job, Part(1, 100, 50, 0, 0)), key).Refusal);
    }
}
