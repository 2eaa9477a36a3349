using RabbitMQ.Client;

namespace AttentionActors.Cluster.Transport;

/// <summary>
/// The exchanges and queues of one cluster (names start with the configured prefix):
/// <list type="bullet">
/// <item><c>P.work</c>: durable quorum queue of shards; workers consume it with prefetch 1 per worker and
/// ack only once the partial is confirmed downstream; after <c>DeliveryLimit</c> deliveries a shard is
/// dead-lettered to <c>P.dead-letters</c> → <c>P.dead</c>, which coordinator nodes watch.</item>
/// <item><c>P.nodes</c>: direct exchange; each node's inbox <c>P.node.NAME</c> (classic, exclusive) is bound by its name.</item>
/// <item><c>P.broadcast</c>: fanout to workers' inboxes (a job's end reaches every worker).</item>
/// <item><c>P.heartbeats</c>: fanout to the inboxes of nodes that track membership.</item>
/// </list>
/// </summary>
internal sealed class Topology(string prefix, int deliveryLimit)
{
    public string WorkQueue => $"{prefix}.work";

    public string DeadLetterExchange => $"{prefix}.dead-letters";

    public string DeadQueue => $"{prefix}.dead";

    public string Nodes => $"{prefix}.nodes";

    public string Broadcast => $"{prefix}.broadcast";

    public string Heartbeats => $"{prefix}.heartbeats";

    public string Inbox(string node) => $"{prefix}.node.{node}";

    /// <summary>Declares the shared exchanges and queues (idempotent: every node does it at start).</summary>
    public async Task DeclareSharedAsync(IChannel channel, CancellationToken cancellationToken = default)
    {
        await channel.ExchangeDeclareAsync(Nodes, ExchangeType.Direct, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.ExchangeDeclareAsync(Broadcast, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.ExchangeDeclareAsync(Heartbeats, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.ExchangeDeclareAsync(DeadLetterExchange, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueDeclareAsync(DeadQueue, durable: true, exclusive: false, autoDelete: false, arguments: null, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueBindAsync(DeadQueue, DeadLetterExchange, "", cancellationToken: cancellationToken).ConfigureAwait(false);
        var work = new Dictionary<string, object?>
        {
            ["x-queue-type"] = "quorum",
            ["x-delivery-limit"] = deliveryLimit,
            ["x-dead-letter-exchange"] = DeadLetterExchange,
        };
        await channel.QueueDeclareAsync(WorkQueue, durable: true, exclusive: false, autoDelete: false, arguments: work, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Declares a node's inbox and its bindings: by name, and to the broadcast and heartbeat fanouts as asked.</summary>
    public async Task DeclareInboxAsync(IChannel channel, string node, bool broadcasts, bool heartbeats, CancellationToken cancellationToken = default)
    {
        string inbox = Inbox(node);
        await channel.QueueDeclareAsync(inbox, durable: false, exclusive: true, autoDelete: true, arguments: null, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueBindAsync(inbox, Nodes, node, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (broadcasts)
        {
            await channel.QueueBindAsync(inbox, Broadcast, "", cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        if (heartbeats)
        {
            await channel.QueueBindAsync(inbox, Heartbeats, "", cancellationToken: cancellationToken).ConfigureAwait(false);
        }
    }
}
