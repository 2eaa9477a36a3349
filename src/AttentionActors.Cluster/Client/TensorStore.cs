using System.Collections.Concurrent;
using System.Security.Cryptography;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Wire;

namespace AttentionActors.Cluster.Client;

/// <summary>
/// The client's tensors, served to the workers of its running jobs: a worker asks for a shard's
/// data (<see cref="FetchShard"/>) presenting the job's store key, which only the job's coordinator
/// and its workers learn; the store slices the shard from the tensors it holds (views, no copy, until
/// they are written to the connection) and checks the place and the size before it sends a byte.
/// </summary>
internal sealed class TensorStore(int maxFrameBytes)
{
    private readonly ConcurrentDictionary<JobId, Entry> jobs = new();

    /// <summary>One job's data: its key, its pass's geometry, and how to cut a shard's input from the tensors.</summary>
    public sealed record Entry(byte[] Key, AttentionGeometry Geometry, Func<Shard, ShardInput> Slice);

    public void Add(JobId job, Entry entry) => jobs[job] = entry;

    public void Remove(JobId job) => jobs.TryRemove(job, out _);

    public Answer Serve(FetchShard fetch, byte[] key)
    {
        if (!jobs.TryGetValue(fetch.Job, out var entry) || !CryptographicOperations.FixedTimeEquals(entry.Key, key))
        {
            return Answer.Refuse($"no job {fetch.Job} with this store key here (it ended, or the key is wrong)");
        }

        var s = fetch.Shard;
        var g = entry.Geometry;
        if (s.Batch < 0 || s.Batch >= g.Batch || s.Head < 0 || s.Head >= g.Heads || s.RowStart < 0 || s.RowCount < 0 || (long)s.RowStart + s.RowCount > g.QuerySeq
            || s.BlockStart < 0 || s.BlockEnd < s.BlockStart || s.BlockEnd > g.BlockCount)
        {
            return Answer.Refuse($"{s} lies outside job {fetch.Job} (Q{g.QueryShape}, {g.BlockCount} key blocks)");
        }

        ShardInput input;
        try
        {
            input = entry.Slice(s);
        }
        catch (AttentionInputException ex)
        {
            return Answer.Refuse($"{s} of job {fetch.Job}: {ex.Message}");
        }

        long bytes = 4L * (input.Q.Length + input.K.Length + input.V.Length + input.Lse.Length + input.Mask.Length
            + (input.Layer is { } l ? l.X.Length + l.KeyIn.Length + l.ValueIn.Length + l.Wq.Length + l.Bq.Length + l.Wk.Length + l.Bk.Length + l.Wv.Length + l.Bv.Length : 0));
        if (bytes > maxFrameBytes - (1 << 16))
        {
            return Answer.Refuse($"{s} of job {fetch.Job} holds {bytes:N0} bytes of data, over the data plane's {maxFrameBytes:N0}-byte frames");
        }

        return Answer.Data(w => WireCodec.EncodeShardData(w, input), (int)bytes + 4096);
    }
}
