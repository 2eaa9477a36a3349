using System.Diagnostics;
using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reducer;

namespace AttentionActors.Pipeline.Workers;

/// <summary>Command: compute one shard and send its partials to <paramref name="Reducer"/>.</summary>
public sealed record ComputeShard(JobId Job, Shard Shard, int Attempt, AttentionProblem Problem, IActorRef Reducer, IActorRef Coordinator);

/// <summary>How a worker turns a shard into partials; the default is the kernel library.</summary>
public delegate PartialSet ShardComputer(AttentionProblem problem, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>
/// Pulls one shard at a time from the queue (like a RabbitMQ consumer with prefetch 1), computes
/// it with the kernel library, replies with its partials, and asks for the next. Stateless.
/// A shard that throws is reported to its coordinator, which decides whether to retry; a shard of
/// a job that ended early is abandoned at the next query panel.
/// </summary>
internal sealed class Worker : ActorBase
{
    public Worker(IActorRef queue, ShardComputer compute, JobCancellations cancellations)
    {
        Receive<ComputeShard>(work =>
        {
            work.Coordinator.Tell(new ShardStarted(work.Job, work.Shard.Id, work.Attempt), Self);
            var clock = Stopwatch.StartNew();
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Context.System.Stopping, cancellations.For(work.Job));
            try
            {
                var partials = compute(work.Problem, work.Shard, work.Attempt, cancel.Token);
                work.Reducer.Tell(new PartialComputed(work.Job, work.Shard.Id, work.Attempt, partials, clock.Elapsed), Self);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                // The job ended early or the node is shutting down: the shard is abandoned with it.
            }
            catch (Exception ex)
            {
                work.Coordinator.Tell(new ShardFailed(work.Job, work.Shard.Id, work.Attempt, $"{ex.GetType().Name}: {ex.Message}"), Self);
            }

            queue.Tell(new WorkerReady(), Self);
        });
        queue.Tell(new WorkerReady(), Self);
    }

    public static PartialSet ComputeWithKernel(AttentionProblem problem, Shard shard, KernelPath path, CancellationToken cancellationToken)
        => Attention.ComputePartials(problem, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd, path, cancellationToken);
}
