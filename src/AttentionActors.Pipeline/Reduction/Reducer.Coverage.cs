using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// The reducer's side of a coverage pass: shards are grouped into key ranges (batch, key head,
/// blocks), and once every shard of a range has arrived its subtrees are folded in the canonical
/// tree over the leaves, so arrival order never changes a bit, and the range's coverage streams
/// to the client. Subtrees are checked (<see cref="CoverageCheck"/>) before use; duplicates and
/// audits are handled as for partials.
/// </summary>
internal sealed partial class Reducer
{
    private readonly Dictionary<JobId, CoverageState> coverageJobs = [];

    private void ExpectCoverage(ExpectShards expect, IActorRef client)
    {
        if (PlanProblem(expect) is { } problem)
        {
            Refuse(expect, client, problem);
            return;
        }

        var job = coverageJobs[expect.Job] = new CoverageState(expect, client);
        client.Tell(job.Progress(), Self);
        if (expect.Shards.Count == 0)
        {
            CompleteCoverage(job);
        }
    }

    /// <summary>
    /// Why a coverage plan cannot be reduced, or null: every shard's rows must be whole leaves, the
    /// key ranges of one key head must not overlap, and the leaves of one range must not either.
    /// </summary>
    private static string? PlanProblem(ExpectShards expect)
    {
        var g = expect.Geometry;
        try
        {
            foreach (var head in expect.Shards.GroupBy(s => (s.Batch, s.Head / g.GroupSize)))
            {
                var ranges = head.Select(s => (s.BlockStart, s.BlockEnd)).Distinct().Order().ToList();
                for (int i = 1; i < ranges.Count; i++)
                {
                    if (ranges[i].BlockStart < ranges[i - 1].BlockEnd)
                    {
                        return $"the coverage plan's key ranges [{ranges[i - 1].BlockStart}, {ranges[i - 1].BlockEnd}) and [{ranges[i].BlockStart}, {ranges[i].BlockEnd}) of batch {head.Key.Batch}, key head {head.Key.Item2} overlap";
                    }
                }

                foreach (var range in head.GroupBy(s => s.BlockStart))
                {
                    var leaves = range.Select(s => Inspection.CoverageLeafRange(g, s.Head, s.RowStart, s.RowCount)).Order().ToList();
                    for (int i = 1; i < leaves.Count; i++)
                    {
                        if (leaves[i].Start < leaves[i - 1].End)
                        {
                            return $"the coverage plan covers leaves [{leaves[i].Start}, {leaves[i - 1].End}) of batch {head.Key.Batch}, key head {head.Key.Item2}, key blocks from {range.Key} twice";
                        }
                    }
                }
            }
        }
        catch (AttentionInputException ex)
        {
            return $"the coverage plan cannot be reduced: {ex.Message}";
        }

        return null;
    }

    private void OnCoverage(CoverageComputed done) => Admit(
        coverageJobs,
        done.Job,
        done.ShardId,
        done.Attempt,
        done.Grant,
        (job, shard) => CoverageCheck.Invalid(job.Expect.Geometry, shard, done.Parts),
        () => PartialDigest.Of(done.Parts),
        (job, shard) =>
        {
            var range = job.RangeOf[shard.Id];
            range.Parts.Add(done.Parts);
            if (range.Parts.Count == range.Shards)
            {
                FinishRange(job, range);
            }
        },
        CompleteCoverage);

    /// <summary>Folds one key range's subtrees in tree order and streams its coverage to the client.</summary>
    private void FinishRange(CoverageState job, KeyRange range)
    {
        var g = job.Expect.Geometry;
        var root = CoverageParts.Combine(range.Parts).Root(Inspection.CoverageLeaves(g));
        range.Parts.Clear();
        int perMessage = Math.Max(1, Math.Min(maxMessageBytes, RowsMessageBytes) / 4);
        int keyStart = range.BlockStart * g.BlockSize;
        for (int j0 = 0; j0 < root.Length; j0 += perMessage)
        {
            int n = Math.Min(perMessage, root.Length - j0);
            job.Client.Tell(new CoverageFinished(job.Expect.Job, range.Batch, range.KvHead, keyStart + j0, n, root.Slice(j0, n).ToArray()), Self);
            job.KeysSent += n;
        }
    }

    private void CompleteCoverage(CoverageState job)
    {
        coverageJobs.Remove(job.Expect.Job);
        job.Client.Tell(new AttentionCompleted(job.Expect.Job, job.KeysSent), Self);
        job.Release(Self);
    }

    private sealed class KeyRange(int batch, int kvHead, int blockStart)
    {
        public int Batch { get; } = batch;

        public int KvHead { get; } = kvHead;

        public int BlockStart { get; } = blockStart;

        public int Shards { get; set; }

        public List<CoverageParts> Parts { get; } = [];
    }

    private sealed class CoverageState : JobBook
    {
        public CoverageState(ExpectShards expect, IActorRef client)
            : base(expect, client)
        {
            var g = expect.Geometry;
            var ranges = new Dictionary<(int, int, int, int), KeyRange>();
            foreach (var shard in expect.Shards)
            {
                var key = (shard.Batch, shard.Head / g.GroupSize, shard.BlockStart, shard.BlockEnd);
                if (!ranges.TryGetValue(key, out var range))
                {
                    range = ranges[key] = new KeyRange(shard.Batch, shard.Head / g.GroupSize, shard.BlockStart);
                }

                range.Shards++;
                RangeOf[shard.Id] = range;
            }
        }

        public Dictionary<int, KeyRange> RangeOf { get; } = [];

        public long KeysSent { get; set; }
    }
}
