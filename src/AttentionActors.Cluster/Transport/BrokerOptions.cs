using AttentionActors.Pipeline;

namespace AttentionActors.Cluster.Transport;

/// <summary>How a node reaches RabbitMQ and sizes its traffic; defaults in brackets (see <c>cluster-config/README.md</c>).</summary>
public sealed record BrokerOptions
{
    /// <summary>
    /// The broker, <c>amqp://[user:password@]host[:port][/vhost]</c> or <c>amqps://…</c> for TLS
    /// [amqp://localhost:5672/]. A user and password in the URL win over <see cref="UserName"/> and
    /// <see cref="Password"/>; URLs are redacted before they are logged or shown.
    /// </summary>
    public string Url { get; init; } = "amqp://localhost:5672/";

    /// <summary>User when the URL names none [none: the URL must name one, or the broker's default applies].</summary>
    public string? UserName { get; init; }

    /// <summary>Password when the URL holds none [none].</summary>
    public string? Password { get; init; }

    /// <summary>A file whose first line is the password (a container secret, say) [none].</summary>
    public string? PasswordFile { get; init; }

    /// <summary>A PEM file of the CA that signed the broker's certificate, for <c>amqps://</c> [none: the system's trust store].</summary>
    public string? CaFile { get; init; }

    /// <summary>How long a node keeps trying to reach the broker at start before giving up with exit code 1 [15 s].</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>Largest message sent or accepted, in bytes [8 MiB; RabbitMQ 4 refuses more than 16 MiB].</summary>
    public int MaxMessageBytes { get; init; } = ClusterOptions.DefaultMaxMessageBytes;

    /// <summary>Prefix of every exchange and queue name, so several clusters can share a broker [attention].</summary>
    public string Prefix { get; init; } = "attention";

    /// <summary>Deliveries of one shard message before the work queue dead-letters it (a shard that kills its workers) [3].</summary>
    public int DeliveryLimit { get; init; } = 3;

    /// <summary>How long a publish may wait for the broker's confirmation before the channel is dropped [30 s].</summary>
    public TimeSpan PublishTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Interval between a node's heartbeats [1 s].</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A node silent this long is taken for dead: watchers of its actors get <c>Terminated</c> [5 s].</summary>
    public TimeSpan NodeTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (!Uri.TryCreate(Url, UriKind.Absolute, out var uri) || (uri.Scheme != "amqp" && uri.Scheme != "amqps"))
        {
            throw new ArgumentException($"broker URL {Redact(Url)} is not an amqp:// or amqps:// URL", nameof(Url));
        }

        if (MaxMessageBytes < 64 << 10 || MaxMessageBytes > 128 << 20)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxMessageBytes), $"MaxMessageBytes {MaxMessageBytes} must be between 64 KiB and 128 MiB");
        }

        if (DeliveryLimit < 1 || ConnectTimeout <= TimeSpan.Zero || PublishTimeout <= TimeSpan.Zero || HeartbeatInterval <= TimeSpan.Zero || NodeTimeout <= HeartbeatInterval)
        {
            throw new ArgumentOutOfRangeException(nameof(DeliveryLimit), $"DeliveryLimit {DeliveryLimit} must be ≥ 1, timeouts positive, and NodeTimeout {NodeTimeout} longer than HeartbeatInterval {HeartbeatInterval}");
        }

        if (Prefix.Length is 0 or > 64 || Prefix.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
        {
            throw new ArgumentException($"queue prefix '{Prefix}' must be 1–64 letters, digits, '-', '_' or '.'", nameof(Prefix));
        }
    }

    /// <summary>The URL with any password replaced by <c>***</c>, fit for logs and tables.</summary>
    public static string Redact(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.UserInfo.Length == 0)
        {
            return url;
        }

        string user = uri.UserInfo.Split(':')[0];
        var builder = new UriBuilder(uri) { UserName = user, Password = uri.UserInfo.Contains(':', StringComparison.Ordinal) ? "***" : "" };
        return builder.Uri.ToString();
    }
}
