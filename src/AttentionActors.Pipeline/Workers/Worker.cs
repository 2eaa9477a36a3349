using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;

namespace AttentionActors.Pipeline.Workers;

/// <summary>Command: compute attempt <paramref name="Attempt"/> of a shard from <paramref name="Input"/> and send its partials to <paramref name="Reducer"/>.</summary>
public sealed record ComputeShard(JobId Job, Shard Shard, int Attempt, ShardInput Input, IActorRef Reducer, IActorRef Coordinator) : IWireMessage;

/// <summary>How a worker turns a shard's input into partials; the default is the kernel library.</summary>
public delegate PartialSet ShardComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>How a worker turns a coverage shard's input (<see cref="JobPass.Coverage"/>) into its subtrees' sums; the default is the kernel library.</summary>
public delegate CoverageParts CoverageComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>How a worker turns a weights shard's input (<see cref="JobPass.Weights"/>) into its cells; the default is the kernel library.</summary>
public delegate WeightsCells WeightsComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>
/// Pulls one shard at a time from the queue, computes
/// it off the mailbox thread, replies with its partials, and asks for the next. While computing it
/// still reads its mailbox, so a <see cref="JobEnded"/> for the running shard's job interrupts the
/// kernel at its next query panel. Stateless apart from the set of ended jobs it remembers and the
/// projections of layer jobs it shares with the process's other workers (<see cref="ProjectionCaches"/>).
/// States: <see cref="Idle"/> → <see cref="Computing"/>.
/// </summary>
internal sealed class Worker : ReceiveActor, IDisposable
{
    private readonly IActorRef queue;
    private readonly ShardComputer compute;
    private readonly CoverageComputer coverage;
    private readonly WeightsComputer weights;
    private readonly ProjectionCaches? projections;
    private readonly EndedJobs ended = new();
    private ComputeShard? current;
    private CancellationTokenSource? running;
    private ComputeThread? thread;

    public Worker(IActorRef queue, ShardComputer compute, CoverageComputer? coverage = null, ProjectionCaches? projections = null, WeightsComputer? weights = null)
    {
        this.queue = queue;
        this.compute = compute;
        this.coverage = coverage ?? Coverage(KernelPath.Auto);
        this.weights = weights ?? Weights(KernelPath.Auto);
        this.projections = projections;
        Idle();
    }

    /// <summary>How the default computer runs the kernel on a shard's own data.</summary>
    public static ShardComputer Kernel(KernelPath path) => (input, _, _, ct) => Attention.ComputePartials(input, path, ct);

    /// <summary>How the default coverage computer runs the kernel on a shard's own data and log-sum-exp.</summary>
    public static CoverageComputer Coverage(KernelPath path) => (input, _, _, ct) => Inspection.CoverageOfShard(input, input.Lse.Span, path, ct);

    /// <summary>How the default weights computer runs the kernel on a shard's own rows, keys and log-sum-exp.</summary>
    public static WeightsComputer Weights(KernelPath path) => (input, _, _, ct) => Inspection.WeightsOfShard(input, path, ct);

    protected override void PreStart()
    {
        thread = new ComputeThread(Self.Path.Name);
        queue.Tell(new WorkerReady(), Self);
    }

    /// <summary>A stopping worker abandons its shard at the next panel (the job's coordinator re-issues it) and lets its thread end.</summary>
    protected override void PostStop()
    {
        running?.Cancel();
        thread?.Complete();
    }

    /// <summary>Akka releases a stopped actor by disposing it; the compute thread has been told to stop by then.</summary>
    public void Dispose() => running?.Dispose();

    private sealed record ShardDone(ComputeShard Work, object? Result, Exception? Error, bool Cancelled) : INoSerializationVerificationNeeded;

    private void Idle()
    {
        Receive<ComputeShard>(Start);
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            projections?.Forget(end.Job);
        });
    }

    private void Computing()
    {
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            projections?.Forget(end.Job);
            if (current?.Job == end.Job)
            {
                running?.Cancel();
            }
        });
        Receive<ShardDone>(Finish);

        // The queue hands out one shard per WorkerReady, so this is a stray: give it back, never drop it.
        Receive<ComputeShard>(work => queue.Tell(work, Self));
    }

    private void Start(ComputeShard work)
    {
        if (ended.Contains(work.Job))
        {
            queue.Tell(new WorkerReady(), Self);
            return;
        }

        work.Coordinator.Tell(new ShardStarted(work.Job, work.Shard.Id, work.Attempt), Self);
        current = work;
        running = new CancellationTokenSource();
        var token = running.Token;
        var self = Self;
        thread!.Post(() =>
        {
            ShardDone done;
            try
            {
                // A layer shard's Q rows and K/V blocks are projected here, shared with the process's other workers.
                var input = work.Input.Layer is null ? work.Input : work.Input.Projected(projections?.For(work.Job));
                object computed = input.Geometry.Pass switch
                {
                    JobPass.Coverage => coverage(input, work.Shard, work.Attempt, token),
                    JobPass.Weights => weights(input, work.Shard, work.Attempt, token),
                    _ => compute(input, work.Shard, work.Attempt, token),
                };
                done = new ShardDone(work, computed, null, false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                done = new ShardDone(work, null, null, true);
            }
            catch (Exception ex)
            {
                done = new ShardDone(work, null, ex, false);
            }

            self.Tell(done, self);
        });
        Become(Computing);
    }

    private void Finish(ShardDone done)
    {
        var work = done.Work;
        if (done.Result is PartialSet partials)
        {
            work.Reducer.Tell(new PartialComputed(work.Job, work.Shard.Id, work.Attempt, partials), Self);
        }
        else if (done.Result is CoverageParts parts)
        {
            work.Reducer.Tell(new CoverageComputed(work.Job, work.Shard.Id, work.Attempt, parts), Self);
        }
        else if (done.Result is WeightsCells cells)
        {
            work.Reducer.Tell(new WeightsComputed(work.Job, work.Shard.Id, work.Attempt, cells), Self);
        }
        else if (!done.Cancelled)
        {
            // Only the text crosses: exception objects never travel in messages.
            work.Coordinator.Tell(new ShardFailed(work.Job, work.Shard.Id, work.Attempt, $"{done.Error!.GetType().Name}: {done.Error.Message}"), Self);
        }

        running?.Dispose();
        running = null;
        current = null;
        Become(Idle);
        queue.Tell(new WorkerReady(), Self);
    }
}
