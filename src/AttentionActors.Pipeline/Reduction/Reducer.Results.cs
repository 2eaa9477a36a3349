using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>What every shard result goes through, whatever the pass.</summary>
internal sealed partial class Reducer
{
    /// <summary>
    /// Admits one shard result of a job in <paramref name="pending"/>: an unknown shard, or a result
    /// that fails <paramref name="check"/>, is a failed attempt and never merged; a repeat is a
    /// duplicate delivery, or the second half of an audit (<see cref="AuditSecond"/>); a first valid
    /// result is recorded, merged by <paramref name="merge"/>, reported and acknowledged, and the job
    /// completed by <paramref name="complete"/> once every shard is in.
    /// </summary>
    private void Admit<TJob>(Dictionary<JobId, TJob> pending, JobId id, int shardId, int attempt, string what, Func<TJob, Shard, string?> check, Func<ulong> digest, Action<TJob, Shard> merge, Action<TJob> complete)
        where TJob : JobBook
    {
        if (!pending.TryGetValue(id, out var job))
        {
            return;
        }

        var coordinator = job.Expect.Coordinator;
        if (!job.ShardsById.TryGetValue(shardId, out var shard))
        {
            coordinator.Tell(new ShardFailed(id, shardId, attempt, $"the job has no shard {shardId}"), Self);
            return;
        }

        string? invalid = check(job, shard);
        if (job.Received.Contains(shardId))
        {
            AuditSecond(pending, job, shard, what, invalid, digest, complete);
            return;
        }

        if (invalid is not null)
        {
            coordinator.Tell(new ShardFailed(id, shardId, attempt, invalid), Self);
            return;
        }

        job.Received.Add(shard.Id);
        if (job.AuditPending.Contains(shard.Id))
        {
            job.AuditFirst[shard.Id] = (digest(), Sender.Path);
        }

        merge(job, shard);
        job.FlopsDone += shard.Flops;

        // The client hears first, so in one process its result is queued before the coordinator stops.
        job.Expect.Client.Tell(job.Progress(), Self);
        if (job.Done)
        {
            complete(job);
        }

        coordinator.Tell(new ShardMerged(id, shard.Id, Sender.Path.ToString()), Self);
    }

    /// <summary>Fails a job whose plan cannot be reduced, before any of its shards is taken: the client and the coordinator hear why.</summary>
    private void Refuse(ExpectShards expect, string problem)
    {
        expect.Client.Tell(new AttentionFailed(expect.Job, problem), Self);
        expect.Coordinator.Tell(new CancelJob(expect.Job, problem), Self);
    }

    /// <summary>
    /// A second result for a merged shard: a repeat from the same node is a duplicate delivery and
    /// ignored; from another node, of a shard under audit, it must carry the first result's bits.
    /// </summary>
    private void AuditSecond<TJob>(Dictionary<JobId, TJob> pending, TJob job, Shard shard, string what, string? invalid, Func<ulong> digest, Action<TJob> complete)
        where TJob : JobBook
    {
        if (!job.AuditPending.Contains(shard.Id) || !job.AuditFirst.TryGetValue(shard.Id, out var first) || first.Worker.Address == Sender.Path.Address)
        {
            return;
        }

        if (invalid is not null || digest() != first.Digest)
        {
            string why = $"audit failed: {what}{shard} computed on {first.Worker.Address} and again on {Sender.Path.Address} gave different bits{(invalid is null ? "" : $" ({invalid})")}; one of these machines computes wrongly";
            pending.Remove(job.Expect.Job);
            job.Expect.Coordinator.Tell(new AuditMismatch(job.Expect.Job, shard.Id, why), Self);
            return;
        }

        job.AuditPending.Remove(shard.Id);
        job.Expect.Coordinator.Tell(new ShardMerged(job.Expect.Job, shard.Id, Sender.Path.ToString(), Audit: true), Self);
        if (job.Done)
        {
            complete(job);
        }
    }
}
