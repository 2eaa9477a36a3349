using Akka.Actor;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>What every shard result goes through, whatever the pass.</summary>
internal sealed partial class Reducer
{
    /// <summary>
    /// Admits one shard result of a job in <paramref name="pending"/>. A result without its attempt's
    /// grant is dropped unseen: it did not come from the worker the attempt went to. An unknown shard,
    /// or a result that fails <paramref name="check"/>, is a failed attempt and never merged; a repeat
    /// is a duplicate delivery, and an audit attempt's result must carry the merged result's bits
    /// (<see cref="AuditSecond"/>). A first valid result is recorded, merged by <paramref name="merge"/>,
    /// reported, and the job completed by <paramref name="complete"/> once every shard is in.
    /// </summary>
    private void Admit<TJob>(Dictionary<JobId, TJob> pending, JobId id, int shardId, int attempt, byte[] grant, Func<TJob, Shard, string?> check, Func<ulong> digest, Action<TJob, Shard> merge, Action<TJob> complete)
        where TJob : JobBook
    {
        if (!pending.TryGetValue(id, out var job) || !Grants.Valid(job.Expect.Key, id, shardId, attempt, grant))
        {
            return;
        }

        var coordinator = job.Expect.Coordinator;
        if (!job.ShardsById.TryGetValue(shardId, out var shard))
        {
            coordinator.Tell(new ShardFailed(id, shardId, attempt, grant, $"the job has no shard {shardId}"), Self);
            return;
        }

        string? invalid = check(job, shard);
        if (attempt >= JobCoordinator.AuditAttempts)
        {
            AuditSecond(pending, job, shard, attempt, invalid, digest, complete);
            return;
        }

        if (job.Received.Contains(shardId))
        {
            return;
        }

        if (invalid is not null)
        {
            coordinator.Tell(new ShardFailed(id, shardId, attempt, grant, invalid), Self);
            return;
        }

        job.Received.Add(shard.Id);
        if (job.AuditPending.Contains(shard.Id))
        {
            job.AuditFirst[shard.Id] = (digest(), attempt);
        }

        merge(job, shard);
        job.FlopsDone += shard.Flops;

        // The client hears first, so in one process its result is queued before the coordinator stops.
        job.Client.Tell(job.Progress(), Self);
        if (job.Done)
        {
            complete(job);
        }

        coordinator.Tell(new ShardMerged(id, shard.Id, attempt), Self);
    }

    /// <summary>Fails a job whose plan cannot be reduced, before any of its shards is taken: the client and the coordinator hear why.</summary>
    private void Refuse(ExpectShards expect, IActorRef client, string problem)
    {
        client.Tell(new AttentionFailed(expect.Job, problem), Self);
        expect.Coordinator.Tell(new CancelJob(expect.Job, problem), Self);
        if (!client.Equals(expect.Client))
        {
            client.Tell(PoisonPill.Instance, Self);
        }
    }

    /// <summary>
    /// The audit attempt's result of a merged shard: it must carry the merged result's bits, or the
    /// job fails, naming both attempts (the coordinator knows which nodes computed them).
    /// </summary>
    private void AuditSecond<TJob>(Dictionary<JobId, TJob> pending, TJob job, Shard shard, int attempt, string? invalid, Func<ulong> digest, Action<TJob> complete)
        where TJob : JobBook
    {
        if (!job.AuditPending.Contains(shard.Id) || !job.AuditFirst.TryGetValue(shard.Id, out var first))
        {
            return;
        }

        if (invalid is not null || digest() != first.Digest)
        {
            pending.Remove(job.Expect.Job);
            job.Expect.Coordinator.Tell(new AuditMismatch(job.Expect.Job, shard.Id, first.Attempt, attempt, invalid ?? "the partials' digests differ"), Self);
            job.Release(Self);
            return;
        }

        job.AuditPending.Remove(shard.Id);
        job.Expect.Coordinator.Tell(new ShardMerged(job.Expect.Job, shard.Id, attempt), Self);
        if (job.Done)
        {
            complete(job);
        }
    }
}
