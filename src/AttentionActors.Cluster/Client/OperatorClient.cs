using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Wire;

namespace AttentionActors.Cluster.Client;

/// <summary>
/// The operator's commands on a running cluster, sent to any node's data plane with a node
/// certificate (a client certificate may not ask them): membership and each node's state, the jobs
/// running, every role's job tables, cancelling any job, and draining a node.
/// </summary>
public sealed class OperatorClient : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly DataPlaneClient data;
    private readonly string cluster;

    private OperatorClient(DataPlaneClient data, string cluster)
    {
        this.data = data;
        this.cluster = cluster;
    }

    /// <summary>An operator of the cluster at <paramref name="cluster"/> (a node's data endpoint) holding a node certificate.</summary>
    public static OperatorClient Connect(string cluster, string certificate, string ca, string? password = null)
    {
        DataEndpoint.Parse(cluster);
        ClusterWire.Register();
        var certificates = ClusterCertificates.Load(certificate, ca, password);
        if (certificates.Role != PeerRole.Node)
        {
            throw new CertificateFileException($"{certificate} is a {certificates.Role.ToString().ToLowerInvariant()} certificate; the operator's commands need a node certificate of the cluster");
        }

        return new OperatorClient(new DataPlaneClient(certificates, new DataPlaneOptions(), new WireCodec(null), PeerRole.Node), cluster);
    }

    public async Task<ClusterStatus> StatusAsync(CancellationToken cancellationToken = default) => (ClusterStatus)await Ask(new ClusterStatusQuery(), cancellationToken).ConfigureAwait(false);

    public async Task<RunningJobs> JobsAsync(CancellationToken cancellationToken = default) => (RunningJobs)await Ask(new RunningJobsQuery(), cancellationToken).ConfigureAwait(false);

    public async Task<ClusterJobTables> JobTablesAsync(CancellationToken cancellationToken = default) => (ClusterJobTables)await Ask(new ClusterJobTablesQuery(), cancellationToken).ConfigureAwait(false);

    public async Task<IReadOnlyList<string>> DoorsAsync(CancellationToken cancellationToken = default) => ((Doors)await Ask(new DoorsQuery(), cancellationToken).ConfigureAwait(false)).Endpoints;

    /// <summary>Cancels <paramref name="job"/> on whichever coordinator runs it; throws <see cref="DataPlaneException"/> when none does.</summary>
    public async Task CancelAsync(JobId job, string reason, CancellationToken cancellationToken = default)
    {
        var refusals = new List<string>();
        foreach (string door in await DoorsAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                await data.RequestAsync(door, default, new CancelJob(job, reason), Timeout, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (DataPlaneException ex)
            {
                refusals.Add(ex.Message);
            }
        }

        throw new DataPlaneException($"no coordinator runs job {job} ({string.Join("; ", refusals)})");
    }

    /// <summary>Drains the node at <paramref name="address"/> (a cluster address): it takes no more shards, answers its running ones and leaves.</summary>
    public Task DrainAsync(string address, CancellationToken cancellationToken = default) => Ask(new DrainNode(address), cancellationToken);

    /// <summary>Asks the data plane for <paramref name="bytes"/> bytes of data (the data-plane benchmark).</summary>
    public Task<long> ProbeAsync(string endpoint, int bytes, CancellationToken cancellationToken = default)
        => data.RequestDataAsync(endpoint, default, new ProbeData(bytes), seq => seq.Length, Timeout, cancellationToken);

    private Task<object> Ask(object question, CancellationToken cancellationToken) => data.RequestAsync(cluster, default, question, Timeout, cancellationToken);

    public ValueTask DisposeAsync() => data.DisposeAsync();
}
