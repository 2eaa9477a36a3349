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
/// <item><c>P.heartbeats</c>: fanout to <c>P.beats.NAME</c> of each node that tracks membership — a queue of its
/// own, so liveness never waits behind 8 MiB data messages; beats older than the node timeout expire.</item>
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

    public string Beats(string node) => $"{prefix}.beats.{node}";

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

    /// <summary>Declares a node's inbox and its bindings: by name, and to the broadcast fanout as asked.</summary>
    public async Task DeclareInboxAsync(IChannel channel, string node, bool broadcasts, CancellationToken cancellationToken = default)
    {
        string inbox = Inbox(node);
        await channel.QueueDeclareAsync(inbox, durable: false, exclusive: true, autoDelete: true, arguments: null, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueBindAsync(inbox, Nodes, node, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (broadcasts)
        {
            await channel.QueueBindAsync(inbox, Broadcast, "", cancellationToken: cancellationToken).ConfigureAwait(false);
        }

    }

    /// <summary>Declares the queue a node reads every node's heartbeats from; beats older than <paramref name="ttl"/> expire unread.</summary>
    public async Task DeclareBeatsAsync(IChannel channel, string node, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        string beats = Beats(node);
        var arguments = new Dictionary<string, object?> { ["x-message-ttl"] = (int)ttl.TotalMilliseconds };
        await channel.QueueDeclareAsync(beats, durable: false, exclusive: true, autoDelete: true, arguments: arguments, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueBindAsync(beats, Heartbeats, "", cancellationToken: cancellationToken).ConfigureAwait(false);
    }
}
