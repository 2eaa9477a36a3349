using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Reducer;

/// <summary>Command: get ready for a job's shards; the result goes to <paramref name="Client"/>.</summary>
public sealed record ExpectShards(JobId Job, AttentionProblem Problem, IReadOnlyList<Shard> Shards, IActorRef Client, IActorRef Coordinator);

/// <summary>Notice from a worker: a shard's partials.</summary>
public sealed record PartialComputed(JobId Job, int ShardId, int Attempt, PartialSet Partials, TimeSpan Elapsed);

/// <summary>Command: give up on a job and tell its client why.</summary>
public sealed record FailJob(JobId Job, string Reason);

/// <summary>Notice to the client (after a last, complete <see cref="JobProgress"/>): the finished output [B, H, Nq, Dv] and log-sum-exp [B, H, Nq].</summary>
public sealed record AttentionCompleted(JobId Job, AttentionResult Result);

/// <summary>Notice to the client: the job failed; <paramref name="Reason"/> names the shard or cause.</summary>
public sealed record AttentionFailed(JobId Job, string Reason);

/// <summary>
/// Merges partials into the exact output. Rows are cut into segments at every shard boundary; a
/// segment is reduced, in the canonical tree order, once every shard covering it has arrived —
/// so arrival order never changes a bit. A second copy of a shard (delivery is at least once, and a
/// late shard may be re-issued) is dropped by shard id. Partials are validated before use: a bad
/// one is reported to the coordinator as a failed shard, never merged.
/// </summary>
internal sealed class Reducer : ActorBase
{
    private readonly Dictionary<JobId, JobState> jobs = [];

    public Reducer()
    {
        Receive<ExpectShards>(expect =>
        {
            var job = jobs[expect.Job] = new JobState(expect);
            expect.Client.Tell(job.Progress(), Self);
        });
        Receive<PartialComputed>(OnPartial);
        Receive<FailJob>(fail =>
        {
            if (jobs.Remove(fail.Job, out var job))
            {
                job.Expect.Client.Tell(new AttentionFailed(fail.Job, fail.Reason), Self);
            }
        });
    }

    private void OnPartial(PartialComputed done)
    {
        if (!jobs.TryGetValue(done.Job, out var job) || !job.Received.Add(done.ShardId))
        {
            return;
        }

        string? problem = job.ShardsById.TryGetValue(done.ShardId, out var shard)
            ? Invalid(job.Expect.Problem, shard, done.Partials)
            : $"unknown shard {done.ShardId}";
        if (problem is not null || shard is null)
        {
            job.Received.Remove(done.ShardId);
            job.Expect.Coordinator.Tell(new ShardFailed(done.Job, done.ShardId, done.Attempt, problem ?? "unknown shard"), Self);
            return;
        }

        foreach (var segment in job.SegmentsOf[shard.Id])
        {
            segment.Parts.Add((done.Partials, segment.Start - shard.RowStart));
            if (--segment.Remaining == 0)
            {
                Finish(job, segment);
            }
        }

        job.FlopsDone += shard.Flops;
        job.Expect.Coordinator.Tell(new ShardMerged(done.Job, shard.Id, shard.Flops), Self);
        job.Expect.Client.Tell(job.Progress(), Self);
        if (job.Received.Count == job.ShardsById.Count)
        {
            jobs.Remove(done.Job);
            job.Expect.Client.Tell(new AttentionCompleted(done.Job, new AttentionResult(job.Output, job.Lse)), Self);
        }
    }

    /// <summary>Reduces one segment in tree order and writes its finished rows.</summary>
    private static void Finish(JobState job, Segment segment)
    {
        var p = job.Expect.Problem;
        int rows = segment.End - segment.Start;
        var slices = segment.Parts.Select(part => Slice(part.Set, part.Offset, rows)).ToList();
        var root = CanonicalTree.Reduce(p.BlockCount, slices);
        long first = (((long)segment.Batch * p.Heads) + segment.Head) * p.QuerySeq + segment.Start;
        CanonicalTree.Finalize(root, job.Output.Data.Span.Slice((int)(first * p.ValueDim), rows * p.ValueDim), job.Lse.AsSpan((int)first, rows));
        segment.Parts.Clear();
    }

    private static PartialSet Slice(PartialSet set, int offset, int rows)
    {
        if (offset == 0 && rows == set.Rows)
        {
            return set;
        }

        var slice = new PartialSet(set.Nodes, rows, set.ValueDim);
        for (int n = 0; n < set.Nodes.Length; n++)
        {
            Array.Copy(set.M, (n * set.Rows) + offset, slice.M, n * rows, rows);
            Array.Copy(set.L, (n * set.Rows) + offset, slice.L, n * rows, rows);
            Array.Copy(set.O, ((n * set.Rows) + offset) * set.ValueDim, slice.O, n * rows * set.ValueDim, rows * set.ValueDim);
        }

        return slice;
    }

    /// <summary>Why a shard's partials cannot be merged, or null when they can.</summary>
    internal static string? Invalid(AttentionProblem p, Shard shard, PartialSet set)
    {
        if (set.Rows != shard.RowCount || set.ValueDim != p.ValueDim)
        {
            return $"partials of {shard} hold {set.Rows} rows × {set.ValueDim} values, expected {shard.RowCount} × {p.ValueDim}";
        }

        long previousEnd = shard.BlockStart;
        foreach (var node in set.Nodes)
        {
            if (node.Start < previousEnd || node.End > shard.BlockEnd || node.Level < 0)
            {
                return $"partials of {shard} hold tree node {node} outside the shard's blocks or out of order";
            }

            previousEnd = node.End;
        }

        for (int i = 0; i < set.M.Length; i++)
        {
            float m = set.M[i], l = set.L[i];
            bool identity = float.IsNegativeInfinity(m) && l == 0;
            if (!identity && !(float.IsFinite(m) && float.IsFinite(l) && l >= 1))
            {
                return $"partials of {shard} hold (m, l) = ({m}, {l}) at entry {i}";
            }
        }

        for (int i = 0; i < set.O.Length; i++)
        {
            if (!float.IsFinite(set.O[i]))
            {
                return $"partials of {shard} hold o = {set.O[i]} at entry {i}";
            }
        }

        return null;
    }

    private sealed class Segment(int batch, int head, int start, int end)
    {
        public int Batch { get; } = batch;

        public int Head { get; } = head;

        public int Start { get; } = start;

        public int End { get; } = end;

        public int Remaining { get; set; }

        public List<(PartialSet Set, int Offset)> Parts { get; } = [];
    }

    private sealed class JobState
    {
        public JobState(ExpectShards expect)
        {
            Expect = expect;
            var p = expect.Problem;
            Output = AttentionTensor.Zeros("out", p.Batch, p.Heads, p.QuerySeq, p.ValueDim);
            Lse = new float[p.Batch * p.Heads * p.QuerySeq];
            Array.Fill(Lse, float.NegativeInfinity);
            ShardsById = expect.Shards.ToDictionary(s => s.Id);
            TotalFlops = expect.Shards.Sum(s => s.Flops);
            foreach (var group in expect.Shards.GroupBy(s => (s.Batch, s.Head)))
            {
                var cuts = group.SelectMany(s => new[] { s.RowStart, s.RowEnd }).Distinct().Order().ToArray();
                var segments = cuts.Zip(cuts.Skip(1)).Select(c => new Segment(group.Key.Batch, group.Key.Head, c.First, c.Second)).ToList();
                foreach (var shard in group)
                {
                    var mine = segments.Where(g => g.Start >= shard.RowStart && g.End <= shard.RowEnd).ToList();
                    mine.ForEach(g => g.Remaining++);
                    SegmentsOf[shard.Id] = mine;
                }
            }
        }

        public ExpectShards Expect { get; }

        public AttentionTensor Output { get; }

        public float[] Lse { get; }

        public Dictionary<int, Shard> ShardsById { get; }

        public Dictionary<int, List<Segment>> SegmentsOf { get; } = [];

        public HashSet<int> Received { get; } = [];

        public double FlopsDone { get; set; }

        public double TotalFlops { get; }

        private System.Diagnostics.Stopwatch Clock { get; } = System.Diagnostics.Stopwatch.StartNew();

        /// <summary>Progress as the reducer sees it: it reports before the result, so the last report is complete.</summary>
        public JobProgress Progress() => new(Expect.Job, Received.Count, ShardsById.Count, FlopsDone, TotalFlops, Clock.Elapsed);
    }
}
