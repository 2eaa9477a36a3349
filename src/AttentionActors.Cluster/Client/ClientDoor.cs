using System.Collections.Concurrent;
using Akka.Actor;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Cluster.Client;

/// <summary>
/// What a client answers on its data plane, and only to nodes of its cluster: workers' fetches of
/// its jobs' data (<see cref="TensorStore"/>), and its jobs' rows, progress, results and failures,
/// each presenting the inbox key of one of its jobs — which only that job's reducer and coordinator
/// hold. Each delivery goes to the job's client actor as sent by the job's inbox, the one sender the
/// actor takes such messages from.
/// </summary>
internal sealed class ClientDoor(TensorStore store) : IDataPlaneHandler
{
    private readonly ConcurrentDictionary<string, Box> boxes = new(StringComparer.Ordinal);

    /// <summary>A job's inbox: the job, its client actor, and the actor deliveries arrive as.</summary>
    public sealed record Box(JobId Job, IActorRef Client, IActorRef Inbox);

    public void Open(byte[] key, Box box) => boxes[Convert.ToHexString(key)] = box;

    public void Close(byte[] key) => boxes.TryRemove(Convert.ToHexString(key), out _);

    public Task<Answer> HandleAsync(Peer peer, byte[] key, object request, CancellationToken cancellationToken)
    {
        if (peer.Role != PeerRole.Node)
        {
            return Task.FromResult(Answer.Refuse("only nodes of the cluster may fetch data from or deliver results to a client"));
        }

        if (request is FetchShard fetch)
        {
            return Task.FromResult(store.Serve(fetch, key));
        }

        JobId? job = request switch
        {
            RowsFinished m => m.Job,
            CoverageFinished m => m.Job,
            WeightsFinished m => m.Job,
            JobProgress m => m.Job,
            AttentionCompleted m => m.Job,
            AttentionFailed m => m.Job,
            _ => null,
        };
        if (job is null)
        {
            return Task.FromResult(Answer.Refuse($"a client takes no {request.GetType().Name}"));
        }

        if (!boxes.TryGetValue(Convert.ToHexString(key), out var box) || box.Job != job)
        {
            return Task.FromResult(Answer.Refuse($"no inbox of job {job} opens with this key"));
        }

        box.Client.Tell(request, box.Inbox);
        return Task.FromResult(Answer.Of(new Ack()));
    }
}
