using System.Collections.Concurrent;
using AttentionActors.Actors;
using AttentionActors.Cluster.Transport;
using AttentionActors.Cluster.Wire;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Cluster.Client;

/// <summary>
/// Submits jobs to a running cluster and reads its membership. Each job: a coordinator node is
/// chosen from the heartbeats, the geometry goes first (the coordinator may refuse at once), then
/// Q, K and V in budget-sized chunks, each confirmed by the broker before the next is sent (so the
/// upload never holds a second copy of the tensors). Output rows stream back into the caller's
/// buffer as the reducer finishes them. Every job's task completes: with the result, or faulted
/// with <see cref="AttentionJobException"/> when the job fails or its coordinator or reducer node
/// dies (after the node timeout and the result grace), or cancelled.
/// </summary>
public sealed class ClusterClient : IAsyncDisposable
{
    private readonly ActorSystem system;
    private readonly NodeTransport transport;
    private readonly TimeSpan resultGrace;
    private readonly ConcurrentDictionary<JobId, IActorRef> pending = new();

    private ClusterClient(ActorSystem system, NodeTransport transport, TimeSpan resultGrace)
    {
        this.system = system;
        this.transport = transport;
        this.resultGrace = resultGrace;

        // Messages of a running job may be lost with the connection (inboxes are not durable): fail its jobs clearly rather than let them wait.
        transport.Broker.Lost += reason =>
        {
            foreach (var (_, client) in pending)
            {
                client.Tell(new HostStopping($"the connection to broker {Broker} was lost mid-job ({reason}); the job's messages may be gone, so it is failed rather than left to wait; run it again"));
            }
        };
    }

    /// <summary>The broker URL with its password hidden.</summary>
    public string Broker => transport.Broker.Describe;

    /// <summary>Nodes heard from within the node timeout.</summary>
    public IReadOnlyCollection<Member> Members => transport.Membership.Alive;

    /// <summary>Bytes this client published and received so far.</summary>
    public (long Sent, long Received) Traffic => (transport.Outbox.PublishedBytes, transport.ReceivedBytes);

    /// <summary>Connects to the broker as a client node; throws <see cref="BrokerUnreachableException"/> if it cannot within the connect timeout.</summary>
    public static async Task<ClusterClient> ConnectAsync(BrokerOptions broker, ILoggerFactory? loggers = null, TimeSpan? resultGrace = null, CancellationToken cancellationToken = default)
    {
        loggers ??= NullLoggerFactory.Instance;
        string name = $"client-{Environment.MachineName}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}";
        var system = ActorSystem.Create(name, loggers);
        long started = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string simd = Lanes.Resolve(KernelPath.Auto).ToString();
        NodeHeartbeat Beat() => new(name, [NodeRoles.Client], Environment.MachineName, Environment.ProcessId, simd, 0, started, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0, 0, false);
        try
        {
            var transport = await NodeTransport.StartAsync(system, broker, Beat, broadcasts: false, trackMembership: true, loggers.CreateLogger("AttentionActors.Cluster"), cancellationToken).ConfigureAwait(false);
            return new ClusterClient(system, transport, resultGrace ?? TimeSpan.FromSeconds(5));
        }
        catch
        {
            await system.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Waits until a node with <paramref name="role"/> has sent a heartbeat, or returns false after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForRoleAsync(string role, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!transport.Membership.WithRole(role).Any())
        {
            if (DateTime.UtcNow >= deadline)
            {
                return false;
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>
    /// Runs a validated problem on the cluster, writing the output [B, H, Nq, Dv] into
    /// <paramref name="output"/> (or a new array) as rows arrive. <paramref name="maxShardBytes"/> 0
    /// leaves shard sizes to the coordinator. <paramref name="audit"/> (0 to 1) is the fraction of
    /// shards computed again on a second worker node; any difference in their bits fails the job.
    /// </summary>
    public async Task<AttentionResult> ComputeAsync(AttentionProblem problem, Memory<float>? output = null, long maxShardBytes = 0, IProgress<JobProgress>? progress = null, double audit = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        long outputLength = (long)g.Batch * g.Heads * g.QuerySeq * g.ValueDim;
        var target = output ?? new float[checked((int)outputLength)];
        if (target.Length != outputLength)
        {
            throw new ArgumentException($"the output buffer holds {target.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}, {g.ValueDim}] needs {outputLength}", nameof(output));
        }

        return await RunAsync(g, WithMask(problem, [(TensorRole.Q, problem.Q.Data), (TensorRole.K, problem.K.Data), (TensorRole.V, problem.V.Data)]), target, maxShardBytes, progress, audit, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A multi-head layer's attention on the cluster, <c>[B, H, N, E/H]</c> per head before the
    /// output projection: the layer's inputs and its W_q, W_k, W_v are uploaded (never Q, K or V),
    /// and each worker projects its shard's rows with its head's weights. Bit for bit the
    /// attention of <see cref="MultiHeadLayer.Project"/>'s tensors.
    /// </summary>
    public async Task<AttentionResult> ComputeLayerAsync(LayerProblem problem, long maxShardBytes = 0, IProgress<JobProgress>? progress = null, double audit = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry;
        var w = problem.Weights;
        var layer = g.Layer!;
        var target = new float[checked((int)((long)g.Batch * g.Heads * g.QuerySeq * g.ValueDim))];
        var tensors = new List<(TensorRole, ReadOnlyMemory<float>)> { (TensorRole.X, problem.X), (TensorRole.KeyInput, problem.KeyInput) };
        if (layer.SeparateValues)
        {
            tensors.Add((TensorRole.ValueInput, problem.ValueInput));
        }

        tensors.Add((TensorRole.Wq, w.Wq));
        tensors.Add((TensorRole.Wk, w.Wk));
        tensors.Add((TensorRole.Wv, w.Wv));
        foreach (var (role, bias) in new[] { (TensorRole.Bq, w.Bq), (TensorRole.Bk, w.Bk), (TensorRole.Bv, w.Bv) })
        {
            if (bias is not null)
            {
                tensors.Add((role, bias));
            }
        }

        return await RunAsync(g, [.. tensors], target, maxShardBytes, progress, audit, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The coverage of every key, <c>[B, Hkv, Nk]</c>, as a second job on the cluster once the
    /// attention's log-sum-exp <paramref name="lse"/> <c>[B, H, Nq]</c> is known: Q, K and the lse are
    /// uploaded (no V), workers compute the coverage subtrees and the reducer folds them; the bits
    /// are those of <see cref="Inspection.Coverage"/>.
    /// </summary>
    public async Task<float[]> CoverageAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, long maxShardBytes = 0, IProgress<JobProgress>? progress = null, double audit = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var g = problem.Geometry.ForPass(JobPass.Coverage);
        if (lse.Length != (long)g.Batch * g.Heads * g.QuerySeq)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}] needs {(long)g.Batch * g.Heads * g.QuerySeq}", nameof(lse));
        }

        var coverage = new float[checked((int)((long)g.Batch * g.KvHeads * g.KeySeq))];
        await RunAsync(g, WithMask(problem, [(TensorRole.Q, problem.Q.Data), (TensorRole.K, problem.K.Data), (TensorRole.Lse, lse)]), coverage, maxShardBytes, progress, audit, cancellationToken).ConfigureAwait(false);
        return coverage;
    }

    /// <summary>
    /// A window of the weights pooled into cells (<see cref="WeightsWindow"/>), <c>[CellRows, CellCols]</c>,
    /// as a job on the cluster once the attention's log-sum-exp <paramref name="lse"/> <c>[B, H, Nq]</c>
    /// is known: Q, K and the lse are uploaded (no V), each worker computes whole cells over every head
    /// in use, and the reducer checks and forwards them; the bits are those of <see cref="Inspection.Weights"/>.
    /// </summary>
    public async Task<float[]> WeightsAsync(AttentionProblem problem, ReadOnlyMemory<float> lse, WeightsWindow window, long maxShardBytes = 0, IProgress<JobProgress>? progress = null, double audit = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(window);
        var g = problem.Geometry.ForWeights(window);
        if (lse.Length != (long)g.Batch * g.Heads * g.QuerySeq)
        {
            throw new ArgumentException($"the log-sum-exp holds {lse.Length} values; [{g.Batch}, {g.Heads}, {g.QuerySeq}] needs {(long)g.Batch * g.Heads * g.QuerySeq}", nameof(lse));
        }

        var cells = new float[window.Cells];
        await RunAsync(g, WithMask(problem, [(TensorRole.Q, problem.Q.Data), (TensorRole.K, problem.K.Data), (TensorRole.Lse, lse)]), cells, maxShardBytes, progress, audit, cancellationToken).ConfigureAwait(false);
        return cells;
    }

    /// <summary>The tensors to upload, with the problem's explicit mask (whole, never a window) when it has one.</summary>
    private static (TensorRole Role, ReadOnlyMemory<float> Data)[] WithMask(AttentionProblem problem, (TensorRole Role, ReadOnlyMemory<float> Data)[] tensors)
        => problem.Mask is { } mask
            ? mask.IsWindow ? throw new ArgumentException($"{mask} is a shard's window; submit the whole mask", nameof(problem)) : [.. tensors, (TensorRole.Mask, mask.Data)]
            : tensors;

    private async Task<AttentionResult> RunAsync(AttentionGeometry g, (TensorRole Role, ReadOnlyMemory<float> Data)[] tensors, Memory<float> target, long maxShardBytes, IProgress<JobProgress>? progress, double audit, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(audit, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(audit, 1);
        var options = transport.Broker.Options;
        if (!await WaitForRoleAsync(NodeRoles.Coordinator, options.NodeTimeout, cancellationToken).ConfigureAwait(false))
        {
            throw new AttentionJobException($"no coordinator node is alive on broker {Broker} (no heartbeat in {options.NodeTimeout.TotalSeconds:F0} s): start one with `attention node --roles coordinator --broker …`");
        }

        // A cluster that is still starting (compose up, then run) gets a moment for its workers and reducer to join;
        // if they do not, the coordinator refuses the job and says which role is missing.
        await WaitForRoleAsync(NodeRoles.Reducer, options.NodeTimeout, cancellationToken).ConfigureAwait(false);
        await WaitForRoleAsync(NodeRoles.Worker, options.NodeTimeout, cancellationToken).ConfigureAwait(false);
        var coordinators = transport.Membership.WithRole(NodeRoles.Coordinator).Select(m => m.Heartbeat.Node).ToList();
        var jobs = (ClusterRef)transport.Resolve(new ActorAddress(coordinators[Random.Shared.Next(coordinators.Count)], JobHost.ActorName));
        var job = JobId.New();
        var result = new TaskCompletionSource<AttentionResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = system.ActorOf(Props.Create(() => new JobClient(job, g, target, progress, result, resultGrace)), $"client-{job}");
        pending[job] = client;
        try
        {
            // Until the job is accepted, its coordinator node stands for both the coordinator and the reducer.
            client.Tell(new WatchJob(jobs, jobs));
            await using var registration = cancellationToken.Register(() => client.Tell(new CancelRequested("cancelled by the caller"))).ConfigureAwait(false);
            await SendRoutedAsync(jobs.Address, new SubmitAttention(job, g, maxShardBytes, audit), client).ConfigureAwait(false);
            await UploadAsync(job, tensors, jobs.Address, client, result.Task, options.MaxMessageBytes).ConfigureAwait(false);
            return await result.Task.ConfigureAwait(false);
        }
        finally
        {
            pending.TryRemove(job, out _);
            client.Tell(PoisonPill.Instance);
        }
    }

    /// <summary>Sends the job's tensors in chunks, one confirmed chunk at a time; stops early once the job has ended (refused, say).</summary>
    private async Task UploadAsync(JobId job, (TensorRole Role, ReadOnlyMemory<float> Data)[] tensors, ActorAddress jobs, IActorRef client, Task ended, int maxMessageBytes)
    {
        int chunk = (maxMessageBytes - (64 << 10)) / sizeof(float);
        for (int t = 0; t < tensors.Length; t++)
        {
            var (role, data) = tensors[t];
            long offset = 0;
            do
            {
                if (ended.IsCompleted)
                {
                    return;
                }

                int count = (int)Math.Min(chunk, data.Length - offset);
                bool last = t == tensors.Length - 1 && offset + count == data.Length;
                await SendRoutedAsync(jobs, new TensorChunk(job, role, offset, data.Slice((int)offset, count), last), client).ConfigureAwait(false);
                offset += count;
            }
            while (offset < data.Length);
        }
    }

    /// <summary>
    /// Sends to a node, sending again while the broker returns the message unrouted (a node that is
    /// heard from but still re-creating its inbox after a reconnect) for up to one node timeout.
    /// </summary>
    private async Task SendRoutedAsync(ActorAddress target, object message, IActorRef sender)
    {
        var deadline = DateTime.UtcNow + transport.Broker.Options.NodeTimeout;
        while (true)
        {
            try
            {
                await transport.Send(target, message, sender).ConfigureAwait(false);
                return;
            }
            catch (UnroutableMessageException unroutable)
            {
                if (DateTime.UtcNow >= deadline)
                {
                    throw new AttentionJobException($"{unroutable.Message}; gave up after {transport.Broker.Options.NodeTimeout.TotalSeconds:F0} s");
                }

                await Task.Delay(100).ConfigureAwait(false);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (_, client) in pending)
        {
            client.Tell(new HostStopping("the cluster client was disposed before the job finished"));
        }

        await system.TerminateAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        await transport.StopAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        await transport.DisposeAsync().ConfigureAwait(false);
    }
}
