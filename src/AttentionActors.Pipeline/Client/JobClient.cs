using System.Collections;
using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Coordinator;

namespace AttentionActors.Pipeline.Client;

/// <summary>
/// Finished output rows [RowStart, RowStart + RowCount) of (batch, head): <c>Output [RowCount, Dv]</c>,
/// <c>Lse [RowCount]</c>, and <c>Entropy [RowCount]</c> when the job asked for it (else null).
/// </summary>
public sealed record RowsFinished(JobId Job, int Batch, int Head, int RowStart, int RowCount, float[] Output, float[] Lse, float[]? Entropy = null) : IWireMessage;

/// <summary>Notice to the client: every shard is merged and <paramref name="RowsSent"/> rows were streamed.</summary>
public sealed record AttentionCompleted(JobId Job, long RowsSent) : IWireMessage;

/// <summary>Notice to the client: the job failed (or was cancelled); <paramref name="Reason"/> names the shard or cause.</summary>
public sealed record AttentionFailed(JobId Job, string Reason, bool Cancelled = false) : IWireMessage;

/// <summary>Progress notice to the client, from the reducer: shards and FLOPs merged so far.</summary>
public sealed record JobProgress(JobId Job, int ShardsDone, int ShardsTotal, double FlopsDone, double FlopsTotal, TimeSpan Elapsed) : IWireMessage;

/// <summary>Command to a client: watch the job's coordinator and reducer; if either stops first, fail after the grace period.</summary>
public sealed record WatchJob(IActorRef Coordinator, IActorRef Reducer) : IWireMessage;

/// <summary>Command to a client: the caller gave up; tell the coordinator and complete as cancelled at once.</summary>
public sealed record CancelRequested(string Reason);

/// <summary>Command to a client: the host is shutting down; fail the job with <paramref name="Reason"/>.</summary>
public sealed record HostStopping(string Reason);

/// <summary>
/// The client end of one job. It writes streamed rows into the caller's output as they come
/// (checking each message: job, place, sizes, finite values, and that a repeated row carries the
/// same bits), completes only when every row that sees a key has arrived, and always completes:
/// on failure, cancellation, shutdown, or the coordinator or reducer stopping without a result.
/// After completing it writes nothing more, so the caller may release the buffers at once.
/// </summary>
internal sealed class JobClient : ActorBase
{
    private readonly JobId job;
    private readonly AttentionGeometry geometry;
    private readonly Memory<float> output;
    private readonly float[] lse;
    private readonly float[]? entropy;
    private readonly BitArray received;
    private readonly IProgress<JobProgress>? progress;
    private readonly TaskCompletionSource<AttentionResult> result;
    private readonly TimeSpan grace;
    private IActorRef coordinator = NoSender.Instance;
    private IActorRef? reducer;
    private long rowsReceived;

    public JobClient(JobId job, AttentionGeometry geometry, Memory<float> output, IProgress<JobProgress>? progress, TaskCompletionSource<AttentionResult> result, TimeSpan grace)
    {
        this.job = job;
        this.geometry = geometry;
        this.output = output;
        this.progress = progress;
        this.result = result;
        this.grace = grace;
        long rows = (long)geometry.Batch * geometry.Heads * geometry.QuerySeq;
        lse = new float[rows];
        entropy = geometry.Options.Entropy ? new float[rows] : null;
        received = new BitArray(checked((int)rows));
        Waiting();
    }

    private sealed record GraceExpired(string Who);

    protected override void PostRestart(Exception cause) => Fail($"the client of job {job} failed: {cause.GetType().Name}: {cause.Message}");

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
        });
        Receive<RowsFinished>(OnRows, m => m.Job == job);
        Receive<JobProgress>(p => progress?.Report(p), m => m.Job == job);
        Receive<AttentionCompleted>(OnCompleted, m => m.Job == job);
        Receive<AttentionFailed>(failed => Fail(failed.Reason, failed.Cancelled), m => m.Job == job);
        Receive<CancelRequested>(cancel =>
        {
            coordinator.Tell(new CancelJob(job, cancel.Reason), Self);
            Fail(cancel.Reason, cancelled: true);
        });
        Receive<HostStopping>(stopping => Fail(stopping.Reason));
        Receive<Terminated>(t =>
        {
            string who = t.Actor.Equals(coordinator) ? $"coordinator {t.Actor.Path}" : $"reducer {t.Actor.Path}";
            Context.ScheduleTellOnce(grace, new GraceExpired(who));
        });
        Receive<GraceExpired>(expired => Fail($"the job's {expired.Who} stopped and no result came within {grace.TotalSeconds:F1} s"));
    }

    private void Done() => Become(() => ReceiveAny(_ => { }));

    private void OnRows(RowsFinished rows)
    {
        if (Malformed(rows) is { } problem)
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

    private void Write(RowsFinished rows)
    {
        var g = geometry;
        var span = output.Span;
        for (int r = 0; r < rows.RowCount; r++)
        {
            long row = ((((long)rows.Batch * g.Heads) + rows.Head) * g.QuerySeq) + rows.RowStart + r;
            var source = rows.Output.AsSpan(r * g.ValueDim, g.ValueDim);
            var target = span.Slice(checked((int)(row * g.ValueDim)), g.ValueDim);
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
        var g = geometry;
        var span = output.Span;
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

                    span.Slice((int)(row * g.ValueDim), g.ValueDim).Clear();
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
        result.TrySetResult(new AttentionResult(new AttentionTensor("out", output, g.Batch, g.Heads, g.QuerySeq, g.ValueDim), lse) { Entropy = entropy });
    }

    private void Fail(string reason, bool cancelled = false)
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
            result.TrySetException(new AttentionJobException(reason));
        }
    }
}
