using System.Buffers;
using Akka.Actor;
using AttentionActors.Cluster.Coordinator;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;

namespace AttentionActors.Cluster.Node;

/// <summary>
/// What a node answers on its data plane, and to whom. From other nodes (a node certificate):
/// workers' results for the reducer, the operator's commands, and probes. From clients (a client
/// certificate): their own jobs — submit, watch, cancel with the job's owner key — and nothing else;
/// a client that sends partials or asks for the cluster's state is refused by name.
/// </summary>
internal sealed class NodeDoor(NodeRoleActors roles) : IDataPlaneHandler
{
    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(30);
    /// <summary>What a probe (the data-plane benchmark) is answered with: made on the first probe, at most 64 MiB.</summary>
    private static readonly Lazy<byte[]> Probe = new(() => new byte[64 << 20]);

    private const int MaxProbeBytes = 64 << 20;

    /// <summary>The node's agent, set once it exists (it needs the data endpoint this door serves).</summary>
    public IActorRef? Agent { get; set; }

    public async Task<Answer> HandleAsync(Peer peer, byte[] key, object request, CancellationToken cancellationToken)
    {
        bool node = peer.Role == PeerRole.Node;
        switch (request)
        {
            case PartialComputed or CoverageComputed or WeightsComputed when node:
                if (roles.Reducer is not { } reducer)
                {
                    return Answer.Refuse("this node is not a reducer");
                }

                reducer.Tell(request);
                return Answer.Of(new Ack());
            case SubmitJob submit:
                return await AskJobs(new Submit(submit)).ConfigureAwait(false);
            case WatchJobs watch:
                return await AskJobs(watch).ConfigureAwait(false);
            case CancelJob cancel:
                return await AskJobs(new CancelRequest(cancel.Job, cancel.Reason, node ? null : key)).ConfigureAwait(false);
            case DoorsQuery:
                return await Ask(Agent, request, "this node's agent").ConfigureAwait(false);
            case ClusterStatusQuery or RunningJobsQuery or ClusterJobTablesQuery or DrainNode when node:
                return await Ask(Agent, request, "this node's agent").ConfigureAwait(false);
            case ProbeData probe when node && probe.Bytes <= MaxProbeBytes:
                return Answer.Data(w => w.Write(Probe.Value.AsSpan(0, probe.Bytes)), probe.Bytes + 16);
            case ProbeData probe when node:
                return Answer.Refuse($"a probe of {probe.Bytes} bytes is over the {MaxProbeBytes >> 20} MiB a node answers");
            default:
                return Answer.Refuse($"a {peer.Role.ToString().ToLowerInvariant()} may not send {request.GetType().Name} to a node");
        }
    }

    private Task<Answer> AskJobs(object message)
        => roles.Jobs is null ? Task.FromResult(Answer.Refuse("this node is not a coordinator: submit jobs to a node with the coordinator role")) : Ask(roles.Jobs, message, "the job host");

    private static async Task<Answer> Ask(IActorRef? target, object message, string who)
    {
        if (target is null)
        {
            return Answer.Refuse($"{who} is not running yet");
        }

        try
        {
            return await target.Ask<object>(message, AskTimeout).ConfigureAwait(false) switch
            {
                Refusal refusal => Answer.Refuse(refusal.Reason),
                var answer => Answer.Of(answer),
            };
        }
        catch (AskTimeoutException)
        {
            return Answer.Refuse($"{who} did not answer within {AskTimeout.TotalSeconds:F0} s");
        }
    }
}
