using Akka.Actor;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Cluster.Node;

/// <summary>
/// A job's client, as seen from a node: what it is told (rows, progress, the result, a failure)
/// goes to the client's inbox on the data plane, in order, one message at a time, presenting the
/// job's inbox key — so only this job's reducer and coordinator can deliver to it. If the client
/// cannot be reached for three tries in a row, the link tells its parent (the reducer or the
/// coordinator node's job host) and drops the rest: the job has no one to finish for.
/// </summary>
internal sealed class ClientLink : ReceiveActor
{
    private const int Tries = 3;

    public ClientLink(JobId job, DataRef inbox, DataPlaneClient data)
    {
        // Awaits stay on the actor's own context (no ConfigureAwait(false)), so the mailbox waits for each send.
        ReceiveAsync<IWireMessage>(async message =>
        {
            DataPlaneException? last = null;
            for (int attempt = 1; attempt <= Tries; attempt++)
            {
                try
                {
                    await data.RequestAsync(inbox.Endpoint, inbox.Key, message, TimeSpan.FromSeconds(30));
                    return;
                }
                catch (DataPlaneException ex)
                {
                    last = ex;
                    await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt));
                }
            }

            Context.Parent.Tell(new ClientUnreachable(job, $"the client's inbox at {inbox.Endpoint} cannot be reached: {last!.Message}"));
            Become(() => ReceiveAny(_ => { }));
        });
    }

    public static Props Props(JobId job, DataRef inbox, DataPlaneClient data) => Akka.Actor.Props.Create(() => new ClientLink(job, inbox, data));
}
