using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace AttentionActors.Cluster.Transport;

/// <summary>The broker could not be reached or refused the node; the text says which broker (redacted) and why.</summary>
public sealed class BrokerUnreachableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// A node's three connections to RabbitMQ: one to publish data (with confirmations), one to
/// consume — apart, because a memory alarm blocks publishing connections and would block the acks
/// with them — and one for heartbeats alone, because the broker's flow control throttles a
/// connection that publishes faster than a quorum queue absorbs, and a throttled heartbeat makes a
/// live node look dead. All recover automatically from lost connections; queues and consumers are redeclared.
/// </summary>
internal sealed partial class BrokerConnection : IAsyncDisposable
{
    private readonly ILogger logger;
    private volatile bool inboxReady = true;

    private BrokerConnection(IConnection publishing, IConnection consuming, IConnection heartbeats, BrokerOptions options, ILogger logger)
    {
        Publishing = publishing;
        Consuming = consuming;
        Heartbeats = heartbeats;
        Options = options;
        this.logger = logger;
        Publishing.ConnectionShutdownAsync += (_, e) => e.Initiator == ShutdownInitiator.Application ? Task.CompletedTask : OnShutdown("publishing", e.ReplyText);
        Consuming.ConnectionShutdownAsync += (_, e) => e.Initiator == ShutdownInitiator.Application ? Task.CompletedTask : OnShutdown("consuming", e.ReplyText);
        Publishing.RecoverySucceededAsync += (_, _) => OnRecovered("publishing");
        Consuming.RecoverySucceededAsync += (_, _) => OnRecovered("consuming");
    }

    /// <summary>
    /// False from the loss of the consuming connection until its recovery, queues, bindings and
    /// consumers included, has finished: while false this node's inbox may not exist on the broker,
    /// and messages sent to it would be dropped, so the node does not announce itself alive.
    /// </summary>
    public bool InboxReady => inboxReady;

    public IConnection Publishing { get; }

    public IConnection Consuming { get; }

    public IConnection Heartbeats { get; }

    public BrokerOptions Options { get; }

    /// <summary>The broker URL with its password hidden.</summary>
    public string Describe => BrokerOptions.Redact(Options.Url);

    /// <summary>Raised when a connection is lost (the transport tells its jobs); recovery follows on its own.</summary>
    public event Action<string>? Lost;

    /// <summary>Connects both connections, retrying with backoff until <see cref="BrokerOptions.ConnectTimeout"/>.</summary>
    public static async Task<BrokerConnection> ConnectAsync(BrokerOptions options, string node, ILogger logger, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var factory = Factory(options, node);
        var deadline = DateTime.UtcNow + options.ConnectTimeout;
        var delay = TimeSpan.FromMilliseconds(200);
        while (true)
        {
            try
            {
                var opened = new List<IConnection>();
                try
                {
                    foreach (string purpose in new[] { "publish", "consume", "heartbeat" })
                    {
                        opened.Add(await factory.CreateConnectionAsync($"{node} {purpose}", cancellationToken).ConfigureAwait(false));
                    }

                    return new BrokerConnection(opened[0], opened[1], opened[2], options, logger);
                }
                catch
                {
                    foreach (var connection in opened)
                    {
                        await connection.DisposeAsync().ConfigureAwait(false);
                    }

                    throw;
                }
            }
            catch (BrokerUnreachableException)
            {
                throw;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                if (IsAuthenticationFailure(ex))
                {
                    throw new BrokerUnreachableException($"broker {BrokerOptions.Redact(options.Url)} refused the credentials of user '{factory.UserName}'", ex);
                }

                if (DateTime.UtcNow + delay > deadline)
                {
                    throw new BrokerUnreachableException($"cannot reach broker {BrokerOptions.Redact(options.Url)} after {options.ConnectTimeout.TotalSeconds:F0} s: {Innermost(ex).Message}", ex);
                }

                LogRetrying(logger, BrokerOptions.Redact(options.Url), delay.TotalMilliseconds, Innermost(ex).Message);
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
            }
        }
    }

    /// <summary>A channel that publishes with confirmations and no client-side rate limiter (DESIGN §5: it throttles to 8 MiB/s).</summary>
    public Task<IChannel> CreatePublishChannelAsync(CancellationToken cancellationToken = default)
        => Publishing.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true, outstandingPublisherConfirmationsRateLimiter: null), cancellationToken);

    public Task<IChannel> CreateConsumeChannelAsync(CancellationToken cancellationToken = default)
        => Consuming.CreateChannelAsync(null, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in new[] { Consuming, Publishing, Heartbeats })
        {
            try
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is AlreadyClosedException or OperationInterruptedException or IOException or TimeoutException or OperationCanceledException)
            {
                // Closing a connection the broker already dropped: nothing left to release but the object.
            }

            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static ConnectionFactory Factory(BrokerOptions options, string node)
    {
        var uri = new Uri(options.Url);
        var factory = new ConnectionFactory
        {
            Uri = uri,
            ClientProvidedName = node,
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            NetworkRecoveryInterval = TimeSpan.FromSeconds(1),
            RequestedHeartbeat = TimeSpan.FromSeconds(10),

            // Above anything the broker accepts (RabbitMQ 3.x: 128 MiB by default), not just our budget: a message over the
            // client's limit closes the connection and comes back on redelivery forever. Oversized ones are dropped after receipt.
            MaxInboundMessageBodySize = (uint)Math.Max(128L << 20, (long)options.MaxMessageBytes * 2),
        };
        if (uri.UserInfo.Length == 0)
        {
            if (string.IsNullOrEmpty(options.UserName))
            {
                throw new BrokerUnreachableException($"broker URL {BrokerOptions.Redact(options.Url)} names no user: give one in the URL (amqp://user:password@host/), in ATTENTION_BROKER__USERNAME, or with --broker-user (no guest account is assumed)");
            }

            factory.UserName = options.UserName;
        }

        if (!uri.UserInfo.Contains(':', StringComparison.Ordinal))
        {
            string? password = options.Password;
            if (options.PasswordFile is { } file)
            {
                password = File.Exists(file) ? File.ReadLines(file).FirstOrDefault()?.Trim() : throw new BrokerUnreachableException($"broker password file {file} does not exist");
            }

            factory.Password = password ?? throw new BrokerUnreachableException($"broker URL {BrokerOptions.Redact(options.Url)} holds no password: give one in the URL, in ATTENTION_BROKER__PASSWORD, or in a file named by --broker-password-file");
        }

        if (uri.Scheme == "amqps")
        {
            factory.Ssl = new SslOption(uri.Host) { Enabled = true };
            if (options.CaFile is { } caFile)
            {
                if (!File.Exists(caFile))
                {
                    throw new BrokerUnreachableException($"CA file {caFile} does not exist");
                }

                var ca = X509CertificateLoader.LoadCertificateFromFile(caFile);
                factory.Ssl.CertificateValidationCallback = (_, certificate, _, errors) => TrustedBy(ca, certificate, errors);
            }
        }

        return factory;
    }

    /// <summary>True when the broker's certificate names the host and chains to <paramref name="ca"/>.</summary>
    private static bool TrustedBy(X509Certificate2 ca, X509Certificate? certificate, SslPolicyErrors errors)
    {
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch) || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return chain.Build(leaf);
    }

    private static bool IsAuthenticationFailure(Exception ex)
        => ex is AuthenticationFailureException || ex.InnerException is AuthenticationFailureException
        || (ex is BrokerUnreachableException or RabbitMQ.Client.Exceptions.BrokerUnreachableException && Innermost(ex) is AuthenticationFailureException);

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is { } inner)
        {
            ex = inner;
        }

        return ex;
    }

    private Task OnShutdown(string which, string reason)
    {
        if (which == "consuming")
        {
            inboxReady = false;
        }

        LogLost(logger, which, Describe, reason);
        Lost?.Invoke(reason);
        return Task.CompletedTask;
    }

    private Task OnRecovered(string which)
    {
        if (which == "consuming")
        {
            inboxReady = true;
        }

        LogRecovered(logger, which, Describe);
        return Task.CompletedTask;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "broker {Broker} not reachable yet; retrying in {DelayMs} ms: {Reason}")]
    private static partial void LogRetrying(ILogger logger, string broker, double delayMs, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Which} connection to {Broker} lost: {Reason}; reconnecting")]
    private static partial void LogLost(ILogger logger, string which, string broker, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Which} connection to {Broker} recovered")]
    private static partial void LogRecovered(ILogger logger, string which, string broker);
}
