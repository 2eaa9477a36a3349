using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// Command from a job's coordinator: get ready for its shards. Finished rows and the result go to
/// <paramref name="Client"/>, or in a cluster to <paramref name="ClientInbox"/> on the data plane.
/// <paramref name="Audited"/> lists the shards whose second result, from another node, must carry
/// the same bits before the job completes. <paramref name="MaskBlocks"/>, required for an attention
/// job with an explicit mask, says which blocks each row may attend, so a node the mask hides is told
/// from one a worker skipped. <paramref name="Key"/> checks every result's grant (<see cref="Grants"/>).
/// </summary>
public sealed record ExpectShards(
    JobId Job,
    AttentionGeometry Geometry,
    IReadOnlyList<Shard> Shards,
    IActorRef Client,
    IActorRef Coordinator,
    IReadOnlyList<int> Audited,
    MaskBlocks? MaskBlocks,
    byte[] Key,
    DataRef? ClientInbox = null) : IWireMessage;

/// <summary>Notice from a worker: the partials of attempt <paramref name="Attempt"/> of a shard, with the attempt's grant.</summary>
public sealed record PartialComputed(JobId Job, int ShardId, int Attempt, byte[] Grant, PartialSet Partials) : IWireMessage;

/// <summary>Notice from a worker: the coverage subtrees of attempt <paramref name="Attempt"/> of a coverage shard, with the attempt's grant.</summary>
public sealed record CoverageComputed(JobId Job, int ShardId, int Attempt, byte[] Grant, CoverageParts Parts) : IWireMessage;

/// <summary>Notice from a worker: the cells of attempt <paramref name="Attempt"/> of a weights shard, with the attempt's grant.</summary>
public sealed record WeightsComputed(JobId Job, int ShardId, int Attempt, byte[] Grant, WeightsCells Cells) : IWireMessage;

/// <summary>Command from a job's coordinator: forget the job (the coordinator has told the client why it failed).</summary>
public sealed record FailJob(JobId Job, string Reason) : IWireMessage;

/// <summary>How a reducer in a cluster reaches a job's client: an actor that forwards what it is told to the client's inbox on the data plane.</summary>
public delegate Props ClientLinkProps(JobId job, DataRef inbox);

/// <summary>
/// Merges partials into the exact output and streams it. Rows are cut into segments at every shard
/// boundary; a segment is reduced, in the canonical tree order, once every shard covering it has
/// arrived — so arrival order never changes a bit — and its finished rows go to the client at once
/// in messages of at most <see cref="RowsMessageBytes"/>, so the reducer never holds the output. A
/// second copy of a shard (delivery is at least once; a late shard may be re-issued) is dropped by
/// shard id. A result is taken only with its attempt's grant, so only from the worker the coordinator
/// sent the attempt to; then it is checked (<see cref="PartialCheck"/>) before use: a bad set is
/// reported to the coordinator as a failed attempt, never merged. A job leaves nothing behind: it
/// goes when it completes, when its coordinator fails it, and when its coordinator stops.
/// </summary>
internal sealed partial class Reducer : ReceiveActor
{
    /// <summary>Largest rows message even when the budget allows more: small enough to stream a segment while it is finalized.</summary>
    public const int RowsMessageBytes = 1 << 20;

    private readonly Dictionary<JobId, JobState> jobs = [];
    private readonly int maxMessageBytes;
    private readonly ClientLinkProps? clientLinks;

    public Reducer(int maxMessageBytes = PipelineOptions.DefaultMaxMessageBytes, ClientLinkProps? clientLinks = null)
    {
        this.maxMessageBytes = maxMessageBytes;
        this.clientLinks = clientLinks;
        Receive<ExpectShards>(OnExpect);
        Receive<PartialComputed>(OnPartial);
        Receive<CoverageComputed>(OnCoverage);
        Receive<WeightsComputed>(OnWeights);
        Receive<FailJob>(fail => Forget(fail.Job, fail.Reason, tellClient: false), fail => Books.FirstOrDefault(b => b.Expect.Job == fail.Job)?.Expect.Coordinator.Equals(Sender) == true);
        Receive<Terminated>(t =>
        {
            // A coordinator that stopped took its jobs with it (a finished one has already gone from here).
            foreach (var book in Books.Where(b => b.Expect.Coordinator.Equals(t.ActorRef)).ToList())
            {
                Forget(book.Expect.Job, $"its coordinator {t.ActorRef.Path} stopped", tellClient: false);
            }
        });
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("reducer", [.. Books.Select(b => b.Expect.Job)])));
        Receive<ClientUnreachable>(lost =>
        {
            // The job's rows can no longer reach its client: it ends here, and its coordinator hears why.
            if (Books.FirstOrDefault(b => b.Expect.Job == lost.Job) is { } book)
            {
                book.Expect.Coordinator.Tell(new CancelJob(lost.Job, lost.Reason), Self);
                Forget(lost.Job, lost.Reason, tellClient: false);
            }
        });
    }

    /// <summary>Every job the reducer holds, whatever its pass.</summary>
    private IEnumerable<JobBook> Books => jobs.Values.Cast<JobBook>().Concat(coverageJobs.Values).Concat(weightsJobs.Values);

    /// <summary>A restarted reducer has lost its jobs' partials: every client learns now rather than waiting.</summary>
    protected override void PreRestart(Exception reason, object message)
    {
        AbandonAll($"the reducer failed ({reason.GetType().Name}: {reason.Message}) and lost the job's partials");
        base.PreRestart(reason, message);
    }

    protected override void PostStop() => AbandonAll("the reducer stopped before the job finished");

    private void OnExpect(ExpectShards expect)
    {
        if (!Sender.Equals(expect.Coordinator) || Books.Any(b => b.Expect.Job == expect.Job) || expect.Key.Length != Grants.KeyBytes)
        {
            // Only a job's own coordinator announces it, once, with a key.
            return;
        }

        var client = expect.ClientInbox is { } inbox && clientLinks is not null ? Context.ActorOf(clientLinks(expect.Job, inbox)) : expect.Client;
        Context.Watch(expect.Coordinator);
        if (expect.Geometry.Pass == JobPass.Coverage)
        {
            ExpectCoverage(expect, client);
            return;
        }

        if (expect.Geometry.Pass == JobPass.Weights)
        {
            ExpectWeights(expect, client);
            return;
        }

        if (expect.Geometry.Mask is not null && expect.MaskBlocks is null)
        {
            Refuse(expect, client, $"job {expect.Job} has an explicit mask but its reducer received no mask block map, without which partials cannot be checked");
            return;
        }

        var job = jobs[expect.Job] = new JobState(expect, client);
        client.Tell(job.Progress(), Self);
        if (expect.Shards.Count == 0)
        {
            Complete(job);
        }
    }

    /// <summary>Drops a job; with <paramref name="tellClient"/>, its client and coordinator hear why.</summary>
    private void Forget(JobId id, string reason, bool tellClient)
    {
        JobBook? book = jobs.Remove(id, out var a) ? a : coverageJobs.Remove(id, out var c) ? c : weightsJobs.Remove(id, out var w) ? w : null;
        if (book is null)
        {
            return;
        }

        if (tellClient)
        {
            book.Client.Tell(new AttentionFailed(id, reason), Self);
            book.Expect.Coordinator.Tell(new CancelJob(id, reason), Self);
        }

        book.Release(Self);
    }

    private void AbandonAll(string reason)
    {
        foreach (var book in Books.ToList())
        {
            Forget(book.Expect.Job, reason, tellClient: true);
        }
    }

    private void OnPartial(PartialComputed done) => Admit(
        jobs,
        done.Job,
        done.ShardId,
        done.Attempt,
        done.Grant,
        (job, shard) => PartialCheck.Invalid(job.Expect.Geometry, shard, done.Partials, job.Expect.MaskBlocks),
        () => PartialDigest.Of(done.Partials),
        (job, shard) =>
        {
            foreach (var segment in job.SegmentsOf[shard.Id])
            {
                segment.Parts.Add((done.Partials, segment.Start - shard.RowStart));
                if (--segment.Remaining == 0)
                {
                    Finish(job, segment);
                }
            }
        },
        Complete);

    private void Complete(JobState job)
    {
        jobs.Remove(job.Expect.Job);
        job.Client.Tell(new AttentionCompleted(job.Expect.Job, job.RowsSent), Self);
        job.Release(Self);
    }

    /// <summary>Reduces one segment in tree order and streams its finished rows to the client.</summary>
    private void Finish(JobState job, Segment segment)
    {
        var g = job.Expect.Geometry;
        int dv = g.ValueDim, width = g.PartialWidth;
        int rows = segment.End - segment.Start;
        var slices = segment.Parts.Select(part => Slice(part.Set, part.Offset, rows)).ToList();
        var root = CanonicalTree.Reduce(g.BlockCount, slices);
        segment.Parts.Clear();
        int perMessage = Math.Max(1, Math.Min(maxMessageBytes, RowsMessageBytes) / (4 * (dv + (g.Options.Entropy ? 2 : 1))));
        for (int r0 = 0; r0 < rows; r0 += perMessage)
        {
            int n = Math.Min(perMessage, rows - r0);
            var output = RowBuffers.Rent(n * dv);
            var lse = RowBuffers.Rent(n);
            var entropy = g.Options.Entropy ? RowBuffers.Rent(n) : null;
            for (int r = 0; r < n; r++)
            {
                var o = root.O.AsSpan((r0 + r) * width, width);
                PartialMath.Finalize(root.M[r0 + r], root.L[r0 + r], o[..dv], output.AsSpan(r * dv, dv), out lse[r]);
                if (entropy is not null)
                {
                    entropy[r] = PartialMath.Entropy(root.L[r0 + r], o[dv], lse[r]);
                }
            }

            job.Client.Tell(new RowsFinished(job.Expect.Job, segment.Batch, segment.Head, segment.Start + r0, n, output, lse, entropy), Self);
            job.RowsSent += n;
        }
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

    private sealed class Segment(int batch, int head, int start, int end)
    {
        public int Batch { get; } = batch;

        public int Head { get; } = head;

        public int Start { get; } = start;

        public int End { get; } = end;

        public int Remaining { get; set; }

        public List<(PartialSet Set, int Offset)> Parts { get; } = [];
    }

    /// <summary>What the reducer keeps of any job: its shards, which have arrived, audits and progress.</summary>
    private abstract class JobBook
    {
        private readonly System.Diagnostics.Stopwatch clock = System.Diagnostics.Stopwatch.StartNew();

        protected JobBook(ExpectShards expect, IActorRef client)
        {
            Expect = expect;
            Client = client;
            ShardsById = expect.Shards.ToDictionary(s => s.Id);
            AuditPending = [.. expect.Audited];
            TotalFlops = expect.Shards.Sum(s => s.Flops);
        }

        public ExpectShards Expect { get; }

        /// <summary>Where the job's rows, progress and result go: the client itself, or (in a cluster) the link to its inbox.</summary>
        public IActorRef Client { get; }

        public Dictionary<int, Shard> ShardsById { get; }

        public HashSet<int> Received { get; } = [];

        /// <summary>Audited shards whose second result has not matched yet.</summary>
        public HashSet<int> AuditPending { get; }

        /// <summary>Digest and attempt of each audited shard's merged result.</summary>
        public Dictionary<int, (ulong Digest, int Attempt)> AuditFirst { get; } = [];

        public double FlopsDone { get; set; }

        public double TotalFlops { get; }

        /// <summary>Every shard merged and every audit matched.</summary>
        public bool Done => Received.Count == ShardsById.Count && AuditPending.Count == 0;

        /// <summary>Progress as the reducer sees it: it reports before the result, so the last report is complete.</summary>
        public JobProgress Progress() => new(Expect.Job, Received.Count, ShardsById.Count, FlopsDone, TotalFlops, clock.Elapsed);

        /// <summary>Lets a link to the client go once it has sent what it was told (a link is the reducer's child; a client in this process is not).</summary>
        public void Release(IActorRef reducer)
        {
            if (!Client.Equals(Expect.Client))
            {
                Client.Tell(PoisonPill.Instance, reducer);
            }
        }
    }

    private sealed class JobState : JobBook
    {
        public JobState(ExpectShards expect, IActorRef client)
            : base(expect, client)
        {
            // Segments between consecutive row cuts of each (batch, head); a shard covers the run of
            // segments from its first row's cut to its last's, found by binary search: O(S log S) in all.
            foreach (var group in expect.Shards.GroupBy(s => (s.Batch, s.Head)))
            {
                var cuts = group.SelectMany(s => new[] { s.RowStart, s.RowEnd }).Distinct().Order().ToArray();
                var segments = new Segment[Math.Max(0, cuts.Length - 1)];
                for (int i = 0; i < segments.Length; i++)
                {
                    segments[i] = new Segment(group.Key.Batch, group.Key.Head, cuts[i], cuts[i + 1]);
                }

                foreach (var shard in group)
                {
                    int first = Array.BinarySearch(cuts, shard.RowStart), end = Array.BinarySearch(cuts, shard.RowEnd);
                    var mine = new ArraySegment<Segment>(segments, first, end - first);
                    foreach (var segment in mine)
                    {
                        segment.Remaining++;
                    }

                    SegmentsOf[shard.Id] = mine;
                }
            }
        }

        public Dictionary<int, ArraySegment<Segment>> SegmentsOf { get; } = [];

        public long RowsSent { get; set; }
    }
}
