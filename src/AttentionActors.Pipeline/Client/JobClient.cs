using System.Collections;
using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Coordinator;

namespace AttentionActors.Pipeline.Client;

/// <summary>
/// Finished output rows [RowStart, RowStart + RowCount) of (batch, head): <c>Output [RowCount, Dv]</c>,
/// <c>Lse [RowCount]</c>, and <c>Entropy [RowCount]</c> when the job asked for it (else null).
/// </summary>
public sealed record RowsFinished(JobId Job, int Batch, int Head, int RowStart, int RowCount, float[] Output, float[] Lse, float[]? Entropy = null) : IWireMessage;

/// <summary>
/// Finished coverage of keys [KeyStart, KeyStart + KeyCount) of (batch, key head) in a coverage
/// pass: <c>Coverage [KeyCount]</c>, each key's weight summed over the query heads that share the key head.
/// </summary>
public sealed record CoverageFinished(JobId Job, int Batch, int KvHead, int KeyStart, int KeyCount, float[] Coverage) : IWireMessage;

/// <summary>
/// Finished cells [CellRowStart, +CellRowCount) × [CellColStart, +CellColCount) of a weights pass's
/// window (<see cref="AttentionGeometry.Weights"/>): <c>Values [CellRowCount, CellColCount]</c>.
/// </summary>
public sealed record WeightsFinished(JobId Job, int CellRowStart, int CellRowCount, int CellColStart, int CellColCount, float[] Values) : IWireMessage;

/// <summary>Notice to the client: every shard is merged and <paramref name="RowsSent"/> rows were streamed.</summary>
public sealed record AttentionCompleted(JobId Job, long RowsSent) : IWireMessage;

/// <summary>
/// Notice to the client: the job failed (or was cancelled); <paramref name="Reason"/> names the shard
/// or cause. <paramref name="NodeLost"/>: it failed because a node it ran on was lost, so the same
/// job submitted again can succeed.
/// </summary>
public sealed record AttentionFailed(JobId Job, string Reason, bool Cancelled = false, bool NodeLost = false) : IWireMessage;

/// <summary>Notice from a link to a cluster client's inbox to its parent: the client cannot be reached, so its job should end.</summary>
public sealed record ClientUnreachable(JobId Job, string Reason) : INoSerializationVerificationNeeded;

/// <summary>Progress notice to the client, from the reducer: shards and FLOPs merged so far.</summary>
public sealed record JobProgress(JobId Job, int ShardsDone, int ShardsTotal, double FlopsDone, double FlopsTotal, TimeSpan Elapsed) : IWireMessage;

/// <summary>Command to a client: watch the job's coordinator and reducer; if either stops first, fail after the grace period.</summary>
public sealed record WatchJob(IActorRef Coordinator, IActorRef Reducer) : IWireMessage;

/// <summary>Command to a client: the caller gave up; tell the coordinator and complete as cancelled at once.</summary>
public sealed record CancelRequested(string Reason) : INoSerializationVerificationNeeded;

/// <summary>Command to a client: the host is shutting down; fail the job with <paramref name="Reason"/>.</summary>
public sealed record HostStopping(string Reason) : INoSerializationVerificationNeeded;

/// <summary>
/// The client end of one job. It writes streamed rows into the caller's output as they come
/// (checking each message: job, place, sizes, finite values, and that a repeated row carries the
/// same bits), completes only when every row that sees a key has arrived, and always completes:
/// on failure, cancellation, shutdown, or the coordinator or reducer stopping without a result.
/// After completing it writes nothing more, so the caller may release the buffers at once. In a
/// coverage pass (<see cref="JobPass.Coverage"/>) the output is the coverage <c>[B, Hkv, Nk]</c>
/// and it completes only when every key that some query sees has arrived.
/// </summary>
internal sealed partial class JobClient : ReceiveActor, IWithTimers, IWithUnboundedStash
{
    private readonly JobId job;
    private readonly AttentionGeometry geometry;
    private readonly AttentionTensor output;
    private readonly float[] lse;
    private readonly float[]? entropy;
    private readonly BitArray received;
    private readonly IProgress<JobProgress>? progress;
    private readonly TaskCompletionSource<AttentionResult> result;
    private readonly TimeSpan grace;
    private IActorRef coordinator = ActorRefs.Nobody;
    private IActorRef? reducer;
    private long rowsReceived;

    public JobClient(JobId job, AttentionGeometry geometry, AttentionTensor output, IProgress<JobProgress>? progress, TaskCompletionSource<AttentionResult> result, TimeSpan grace)
    {
        this.job = job;
        this.geometry = geometry;
        this.output = output;
        this.progress = progress;
        this.result = result;
        this.grace = grace;
        bool attention = geometry.Pass == JobPass.Attention;
        long rows = (long)geometry.Batch * geometry.Heads * geometry.QuerySeq;
        lse = attention ? new float[rows] : [];
        entropy = geometry.Options.Entropy && attention ? new float[rows] : null;
        received = new BitArray(checked((int)(geometry.Pass switch
        {
            JobPass.Coverage => (long)geometry.Batch * geometry.KvHeads * geometry.KeySeq,
            JobPass.Weights => geometry.Weights!.Cells,
            _ => rows,
        })));
        Waiting();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public IStash Stash { get; set; } = null!;

    private sealed record GraceExpired(string Who) : INoSerializationVerificationNeeded;

    protected override void PreRestart(Exception reason, object message)
    {
        Fail($"the client of job {job} failed: {reason.GetType().Name}: {reason.Message}");
        base.PreRestart(reason, message);
    }

    protected override void PostStop() => Fail($"the client of job {job} stopped before the job finished");

    private void Waiting()
    {
        Receive<WatchJob>(watch =>
        {
            // In cluster mode the coordinator node stands in until the job is accepted; then the job's own actors replace it.
            if (reducer is not null)
            {
                Context.Unwatch(coordinator);
                Context.Unwatch(reducer);
            }

            coordinator = watch.Coordinator;
            reducer = watch.Reducer;
            Context.Watch(watch.Coordinator);
            Context.Watch(watch.Reducer);
            Stash.UnstashAll();
        });
        // Rows, progress and completion come only from the job's reducer; a failure from it or the coordinator.
        Receive<RowsFinished>(OnRows, m => m.Job == job && Sender.Equals(reducer));
        Receive<CoverageFinished>(OnCoverage, m => m.Job == job && Sender.Equals(reducer));
        Receive<WeightsFinished>(OnWeights, m => m.Job == job && Sender.Equals(reducer));
        Receive<JobProgress>(p => progress?.Report(p), m => m.Job == job && Sender.Equals(reducer));
        Receive<AttentionCompleted>(OnCompleted, m => m.Job == job && Sender.Equals(reducer));
        Receive<AttentionFailed>(failed => Fail(failed.Reason, failed.Cancelled, failed.NodeLost), m => m.Job == job && (Sender.Equals(reducer) || Sender.Equals(coordinator)));
        Receive<CancelRequested>(cancel =>
        {
            coordinator.Tell(new CancelJob(job, cancel.Reason), Self);
            Fail(cancel.Reason, cancelled: true);
        });
        Receive<HostStopping>(stopping => Fail(stopping.Reason));
        Receive<Terminated>(t =>
        {
            string who = t.ActorRef.Equals(coordinator) ? $"coordinator {t.ActorRef.Path}" : $"reducer {t.ActorRef.Path}";
            Timers.StartSingleTimer("grace", new GraceExpired(who), grace);
        });
        Receive<GraceExpired>(expired => Fail($"the job's {expired.Who} stopped and no result came within {grace.TotalSeconds:F1} s"));

        // The job's actors start before this client is told who they are (the coordinator exists only
        // once created), so their first rows, or even the completion, can arrive first: they wait here
        // until the WatchJob names their senders. Once it has, a message from anyone else is refused.
        ReceiveAny(message =>
        {
            if (reducer is null)
            {
                Stash.Stash();
            }
            else
            {
                Unhandled(message);
            }
        });
    }

    private void Done() => Become(() => ReceiveAny(_ => { }));

    private void OnRows(RowsFinished rows)
    {
        if ((geometry.Pass != JobPass.Attention ? $"job {job} computes {geometry.Pass.ToString().ToLowerInvariant()} but received output rows" : Malformed(rows)) is { } problem)
        {
            coordinator.Tell(new CancelJob(job, problem), Self);
            Fail(problem);
            return;
        }

        Write(rows);

        // This client is the message's only consumer: once copied, its arrays serve the next rows.
        RowBuffers.Return(rows.Output);
        RowBuffers.Return(rows.Lse);
        if (rows.Entropy is not null)
        {
            RowBuffers.Return(rows.Entropy);
        }
    }

    private void OnCoverage(CoverageFinished keys)
    {
        var g = geometry;
        string? problem = null;
        if (g.Pass != JobPass.Coverage)
        {
            problem = $"job {job} computes {g.Pass.ToString().ToLowerInvariant()} but received coverage";
        }
        else if (keys.Batch < 0 || keys.Batch >= g.Batch || keys.KvHead < 0 || keys.KvHead >= g.KvHeads
            || keys.KeyStart < 0 || keys.KeyCount < 0 || (long)keys.KeyStart + keys.KeyCount > g.KeySeq)
        {
            problem = $"job {job} received coverage of keys [{keys.KeyStart}, {(long)keys.KeyStart + keys.KeyCount}) of batch {keys.Batch}, key head {keys.KvHead}, outside {g.KeyShape}";
        }
        else if (keys.Coverage is null || keys.Coverage.Length != keys.KeyCount)
        {
            problem = $"job {job} received coverage of {keys.KeyCount} keys carrying {keys.Coverage?.Length} values";
        }
        else if (Array.FindIndex(keys.Coverage, c => !(c >= 0 && float.IsFinite(c))) is >= 0 and int bad)
        {
            problem = $"job {job} received coverage {keys.Coverage[bad]} for key {keys.KeyStart + bad} of batch {keys.Batch}, key head {keys.KvHead}";
        }

        if (problem is not null)
        {
            coordinator.Tell(new CancelJob(job, problem), Self);
            Fail(problem);
            return;
        }

        var span = output.Data.Span;
        long offset = ((((long)keys.Batch * g.KvHeads) + keys.KvHead) * g.KeySeq) + keys.KeyStart;
        for (int j = 0; j < keys.KeyCount; j++)
        {
            int at = (int)(offset + j);
            if (received[at])
            {
                if (BitConverter.SingleToInt32Bits(span[at]) != BitConverter.SingleToInt32Bits(keys.Coverage![j]))
                {
                    string conflict = $"job {job} received two different coverages for key {keys.KeyStart + j} of batch {keys.Batch}, key head {keys.KvHead}";
                    coordinator.Tell(new CancelJob(job, conflict), Self);
                    Fail(conflict);
                    return;
                }

                continue;
            }

            span[at] = keys.Coverage![j];
            received[at] = true;
            rowsReceived++;
        }
    }

    /// <summary>Completes a coverage pass only if every key that some query sees arrived; the others get 0.</summary>
    private void OnCoverageCompleted(AttentionCompleted completed)
    {
        var g = geometry;
        var span = output.Data.Span;
        long missing = 0;
        string? first = null;
        for (int b = 0; b < g.Batch; b++)
        {
            // Keys some query sees: the union of the rows' intervals, marked by a difference array.
            var seen = new int[g.KeySeq + 1];
            for (int i = 0; i < g.QuerySeq; i++)
            {
                var (lo, hi) = g.VisibleKeys(b, i);
                if (hi > lo)
                {
                    seen[lo]++;
                    seen[hi]--;
                }
            }

            int depth = 0;
            for (int j = 0; j < g.KeySeq; j++)
            {
                depth += seen[j];
                for (int kvh = 0; kvh < g.KvHeads; kvh++)
                {
                    int at = (int)((((long)b * g.KvHeads) + kvh) * g.KeySeq) + j;
                    if (received[at])
                    {
                        continue;
                    }

                    if (depth > 0)
                    {
                        missing++;
                        first ??= $"key {j} of batch {b}, key head {kvh}";
                        continue;
                    }

                    span[at] = 0f;
                }
            }
        }

        if (missing > 0)
        {
            Fail($"job {job} finished but the coverage of {missing:N0} keys never arrived (first: {first}); {rowsReceived:N0} received, {completed.RowsSent:N0} sent");
            return;
        }

        Done();
        result.TrySetResult(new AttentionResult(output, []));
    }

    private void Write(RowsFinished rows)
    {
        var g = geometry;
        var span = output.Rows(rows.Batch, rows.Head, rows.RowStart, rows.RowCount).Span;
        for (int r = 0; r < rows.RowCount; r++)
        {
            long row = ((((long)rows.Batch * g.Heads) + rows.Head) * g.QuerySeq) + rows.RowStart + r;
            var source = rows.Output.AsSpan(r * g.ValueDim, g.ValueDim);
            var target = span.Slice(r * g.ValueDim, g.ValueDim);
            if (received[(int)row])
            {
                // Delivery is at least once: a repeat must be the same bits, or something computed wrongly.
                if (!source.SequenceEqual(target) || BitConverter.SingleToInt32Bits(lse[row]) != BitConverter.SingleToInt32Bits(rows.Lse[r])
                    || (entropy is not null && BitConverter.SingleToInt32Bits(entropy[row]) != BitConverter.SingleToInt32Bits(rows.Entropy![r])))
                {
                    string conflict = $"job {job} received two different results for row {rows.RowStart + r} of batch {rows.Batch}, head {rows.Head}";
                    coordinator.Tell(new CancelJob(job, conflict), Self);
                    Fail(conflict);
                    return;
                }

                continue;
            }

            source.CopyTo(target);
            lse[row] = rows.Lse[r];
            if (entropy is not null)
            {
                entropy[row] = rows.Entropy![r];
            }

            received[(int)row] = true;
            rowsReceived++;
        }
    }

    /// <summary>Why a rows message cannot be written, or null.</summary>
    private string? Malformed(RowsFinished rows)
    {
        var g = geometry;
        if (rows.Batch < 0 || rows.Batch >= g.Batch || rows.Head < 0 || rows.Head >= g.Heads
            || rows.RowStart < 0 || rows.RowCount < 0 || (long)rows.RowStart + rows.RowCount > g.QuerySeq)
        {
            return $"job {job} received rows [{rows.RowStart}, {(long)rows.RowStart + rows.RowCount}) of batch {rows.Batch}, head {rows.Head}, outside the output {g.QueryShape}";
        }

        if (rows.Output is null || rows.Lse is null || rows.Output.Length != (long)rows.RowCount * g.ValueDim || rows.Lse.Length != rows.RowCount)
        {
            return $"job {job} received {rows.RowCount} rows carrying {rows.Output?.Length} output and {rows.Lse?.Length} lse values; expected {(long)rows.RowCount * g.ValueDim} and {rows.RowCount}";
        }

        for (int i = 0; i < rows.Output.Length; i++)
        {
            if (!float.IsFinite(rows.Output[i]))
            {
                return $"job {job} received output {rows.Output[i]} in row {rows.RowStart + (i / g.ValueDim)} of batch {rows.Batch}, head {rows.Head}";
            }
        }

        if ((rows.Entropy is null) != (entropy is null) || (rows.Entropy is not null && rows.Entropy.Length != rows.RowCount))
        {
            return $"job {job} received {rows.RowCount} rows carrying {rows.Entropy?.Length ?? 0} entropy values; expected {(entropy is null ? 0 : rows.RowCount)}";
        }

        foreach (float x in rows.Entropy ?? [])
        {
            if (!float.IsFinite(x))
            {
                return $"job {job} received entropy {x} for batch {rows.Batch}, head {rows.Head}";
            }
        }

        foreach (float x in rows.Lse)
        {
            if (float.IsNaN(x) || float.IsPositiveInfinity(x))
            {
                return $"job {job} received log-sum-exp {x} for batch {rows.Batch}, head {rows.Head}";
            }
        }

        return null;
    }

    /// <summary>Completes only if every row that sees a key arrived; rows that see none get output 0 and lse −∞.</summary>
    private void OnCompleted(AttentionCompleted completed)
    {
        if (geometry.Pass == JobPass.Coverage)
        {
            OnCoverageCompleted(completed);
            return;
        }

        if (geometry.Pass == JobPass.Weights)
        {
            OnWeightsCompleted(completed);
            return;
        }

        var g = geometry;
        long missing = 0;
        string? first = null;
        for (int b = 0; b < g.Batch; b++)
        {
            for (int i = 0; i < g.QuerySeq; i++)
            {
                var (lo, hi) = g.VisibleKeys(b, i);
                for (int h = 0; h < g.Heads; h++)
                {
                    long row = ((((long)b * g.Heads) + h) * g.QuerySeq) + i;
                    if (received[(int)row])
                    {
                        continue;
                    }

                    if (hi > lo)
                    {
                        missing++;
                        first ??= $"row {i} of batch {b}, head {h}";
                        continue;
                    }

                    output.Rows(b, h, i, 1).Span.Clear();
                    lse[row] = float.NegativeInfinity;
                    if (entropy is not null)
                    {
                        entropy[row] = 0f;
                    }
                }
            }
        }

        if (missing > 0)
        {
            Fail($"job {job} finished but {missing:N0} output rows never arrived (first: {first}); {rowsReceived:N0} received, {completed.RowsSent:N0} sent");
            return;
        }

        Done();
        result.TrySetResult(new AttentionResult(output, lse) { Entropy = entropy });
    }

    private void Fail(string reason, bool cancelled = false, bool nodeLost = false)
    {
        if (result.Task.IsCompleted)
        {
            return;
        }

        Done();
        if (cancelled)
        {
            result.TrySetException(new OperationCanceledException($"attention job {job} was cancelled: {reason}"));
        }
        else
        {
            result.TrySetException(new AttentionJobException(reason) { NodeLost = nodeLost });
        }
    }
}
