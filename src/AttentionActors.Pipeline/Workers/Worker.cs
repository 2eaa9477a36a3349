using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// A place on another process's data plane and the secret that opens it: a job's tensor store
/// (where workers fetch shard data) or its client's inbox (where the reducer sends rows).
/// </summary>
public sealed record DataRef(string Endpoint, byte[] Key);

/// <summary>
/// Command: compute attempt <paramref name="Attempt"/> of a shard and send the result, with
/// <paramref name="Grant"/>, to the reducer. The data is <paramref name="Input"/> (in one process:
/// views of the job's tensors), or fetched from <paramref name="Store"/> (in a cluster: one hop from
/// the process that holds the tensors). <paramref name="ResultsTo"/> names the reducer node's data
/// endpoint when results travel on the data plane (empty: tell <paramref name="Reducer"/>).
/// <paramref name="Avoid"/> names a node address the shard must not run on (an audit's second computation).
/// <paramref name="Home"/> names the worker node the plan dealt it to, which the queue hands it to first
/// (<see cref="Planning.Locality"/>; empty: any).
/// </summary>
public sealed record ComputeShard(
    JobId Job,
    Shard Shard,
    int Attempt,
    AttentionGeometry Geometry,
    ShardInput? Input,
    DataRef? Store,
    byte[] Grant,
    IActorRef Reducer,
    string ResultsTo,
    IActorRef Coordinator,
    string Avoid = "",
    string Home = "") : IWireMessage;

/// <summary>How a worker turns a shard's input into partials; the default is the kernel library.</summary>
public delegate PartialSet ShardComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>How a worker turns a coverage shard's input (<see cref="JobPass.Coverage"/>) into its subtrees' sums; the default is the kernel library.</summary>
public delegate CoverageParts CoverageComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>How a worker turns a weights shard's input (<see cref="JobPass.Weights"/>) into its cells; the default is the kernel library.</summary>
public delegate WeightsCells WeightsComputer(ShardInput input, Shard shard, int attempt, CancellationToken cancellationToken);

/// <summary>The process that holds a shard's data, or the one that takes its result, could not be reached: a node or a client is gone, not a fault of the shard.</summary>
public sealed class PeerUnreachableException : Exception
{
    public PeerUnreachableException()
    {
    }

    public PeerUnreachableException(string message)
        : base(message)
    {
    }

    public PeerUnreachableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>How a cluster worker fetches a shard's data from its store (checked against the shard before it returns); throws <see cref="PeerUnreachableException"/> when the store cannot be reached.</summary>
public delegate ShardInput ShardFetcher(ComputeShard work, CancellationToken cancellationToken);

/// <summary>
/// How a cluster worker computes, from its node's store, a shard too large to hold whole (its
/// partials), or null when the shard is fetched and computed whole; throws
/// <see cref="PeerUnreachableException"/> when the store cannot be reached.
/// </summary>
public delegate Kernels.Partials.PartialSet? ChunkedComputer(ComputeShard work, ShardComputer compute, CancellationToken cancellationToken);

/// <summary>How a cluster worker sends a result to the reducer node named by <see cref="ComputeShard.ResultsTo"/>; throws <see cref="PeerUnreachableException"/> when that node cannot be reached.</summary>
public delegate void ResultSender(ComputeShard work, IWireMessage result, CancellationToken cancellationToken);

/// <summary>What a worker computes with and how its data come and its results go; the defaults are the kernel library, in one process.</summary>
public sealed record WorkerServices
{
    public ShardComputer Compute { get; init; } = Worker.Kernel(KernelPath.Auto);

    public CoverageComputer Coverage { get; init; } = Worker.Coverage(KernelPath.Auto);

    public WeightsComputer Weights { get; init; } = Worker.Weights(KernelPath.Auto);

    /// <summary>Layer jobs' projections, shared by the workers of one process [none: projected per shard].</summary>
    public ProjectionCaches? Projections { get; init; }

    /// <summary>Fetches a shard's data when the shard carries none (cluster) [none].</summary>
    public ShardFetcher? Fetch { get; init; }

    /// <summary>Computes a large attention shard chunk by chunk from the node's block store (cluster) [none].</summary>
    public ChunkedComputer? Chunked { get; init; }

    /// <summary>Sends results over the data plane when a shard names a results endpoint (cluster) [none].</summary>
    public ResultSender? Send { get; init; }

    /// <summary>The kernel library on <paramref name="path"/> for every pass.</summary>
    public static WorkerServices Kernels(KernelPath path) => new() { Compute = Worker.Kernel(path), Coverage = Worker.Coverage(path), Weights = Worker.Weights(path) };
}

/// <summary>
/// Pulls one shard at a time from its queue, computes it off the mailbox thread, sends the result,
/// and asks for the next. While computing it still reads its mailbox, so a <see cref="JobEnded"/>
/// for the running shard's job interrupts the kernel at its next query panel. Stateless apart from
/// the set of ended jobs it remembers and the projections of layer jobs it shares with the
/// process's other workers (<see cref="ProjectionCaches"/>). States: <see cref="Idle"/> → <see cref="Computing"/>.
/// </summary>
internal sealed class Worker : ReceiveActor, IDisposable
{
    private readonly IActorRef queue;
    private readonly WorkerServices services;
    private readonly EndedJobs ended = new();
    private ComputeShard? current;
    private CancellationTokenSource? running;
    private ComputeThread? thread;

    public Worker(IActorRef queue, WorkerServices services)
    {
        this.queue = queue;
        this.services = services;
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

    private sealed record ShardDone(ComputeShard Work, IWireMessage? Result, Exception? Error, bool Cancelled, ShardFailure Kind = ShardFailure.Compute) : INoSerializationVerificationNeeded;

    private void Idle()
    {
        Receive<ComputeShard>(Start);
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            services.Projections?.Forget(end.Job);
        });
    }

    private void Computing()
    {
        Receive<JobEnded>(end =>
        {
            ended.Add(end.Job);
            services.Projections?.Forget(end.Job);
            if (current?.Job == end.Job)
            {
                running?.Cancel();
            }
        });
        Receive<ShardDone>(Finish);

        // The queue hands out one shard per WorkerReady, so this is a stray: give it back, never drop it.
        Receive<ComputeShard>(work => Sender.Tell(work, Self));
    }

    private void Start(ComputeShard work)
    {
        if (ended.Contains(work.Job))
        {
            queue.Tell(new WorkerReady(), Self);
            return;
        }

        work.Coordinator.Tell(new ShardStarted(work.Job, work.Shard.Id, work.Attempt, work.Grant), Self);
        current = work;
        running = new CancellationTokenSource();
        var token = running.Token;
        var self = Self;
        thread!.Post(() => self.Tell(Run(work, token), self));
        Become(Computing);
    }

    /// <summary>Fetches (if need be), computes and sends one shard's result, on the compute thread.</summary>
    private ShardDone Run(ComputeShard work, CancellationToken token)
    {
        var stage = ShardFailure.StoreUnreachable;
        try
        {
            IWireMessage result;
            if (work.Input is null && services.Chunked?.Invoke(work, services.Compute, token) is { } chunked)
            {
                result = new PartialComputed(work.Job, work.Shard.Id, work.Attempt, work.Grant, chunked);
            }
            else
            {
                var input = work.Input
                    ?? services.Fetch?.Invoke(work, token)
                    ?? throw new InvalidOperationException($"{work.Shard} arrived without its data and this worker has no store to fetch from");

                // A layer shard's Q rows and K/V blocks are projected here, shared with the process's other workers.
                stage = ShardFailure.Compute;
                input = input.Layer is null ? input : input.Projected(services.Projections?.For(work.Job));
                result = input.Geometry.Pass switch
                {
                    JobPass.Coverage => new CoverageComputed(work.Job, work.Shard.Id, work.Attempt, work.Grant, services.Coverage(input, work.Shard, work.Attempt, token)),
                    JobPass.Weights => new WeightsComputed(work.Job, work.Shard.Id, work.Attempt, work.Grant, services.Weights(input, work.Shard, work.Attempt, token)),
                    _ => new PartialComputed(work.Job, work.Shard.Id, work.Attempt, work.Grant, services.Compute(input, work.Shard, work.Attempt, token)),
                };
            }

            stage = ShardFailure.Compute;
            if (work.ResultsTo.Length > 0)
            {
                var send = services.Send ?? throw new InvalidOperationException($"{work.Shard} asks for its result at {work.ResultsTo} and this worker has no data plane");
                stage = ShardFailure.ReducerUnreachable;
                send(work, result, token);
                return new ShardDone(work, null, null, false);
            }

            return new ShardDone(work, result, null, false);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            return new ShardDone(work, null, null, true);
        }
        catch (PeerUnreachableException ex)
        {
            return new ShardDone(work, null, ex, false, stage);
        }
        catch (Exception ex)
        {
            // A bad input, a refused fetch or a kernel error is the shard's: it is tried again.
            return new ShardDone(work, null, ex, false);
        }
    }

    private void Finish(ShardDone done)
    {
        var work = done.Work;
        if (done.Result is { } result)
        {
            work.Reducer.Tell(result, Self);
        }
        else if (done.Error is { } error)
        {
            // Only the text crosses: exception objects never travel in messages.
            work.Coordinator.Tell(new ShardFailed(work.Job, work.Shard.Id, work.Attempt, work.Grant, $"{error.GetType().Name}: {error.Message}", done.Kind), Self);
        }

        running?.Dispose();
        running = null;
        current = null;
        Become(Idle);
        queue.Tell(new WorkerReady(), Self);
    }
}
