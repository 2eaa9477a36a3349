using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline.Wire;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cluster.DataPlane;

/// <summary>Who is on the other end of a data-plane connection: the role its certificate gives it, and where it connected from.</summary>
public sealed record Peer(PeerRole Role, EndPoint Remote)
{
    public override string ToString() => $"{Role.ToString().ToLowerInvariant()} {Remote}";
}

/// <summary>An answer to a request: a wire message, raw data written by <see cref="WriteData"/>, or a refusal.</summary>
public sealed record Answer
{
    public object? Message { get; init; }

    public Action<IBufferWriter<byte>>? WriteData { get; init; }

    /// <summary>About how many bytes <see cref="WriteData"/> writes, when known.</summary>
    public int DataSize { get; init; }

    public string? Refusal { get; init; }

    public static Answer Of(object message) => new() { Message = message };

    public static Answer Data(Action<IBufferWriter<byte>> write, int size = 0) => new() { WriteData = write, DataSize = size };

    public static Answer Refuse(string why) => new() { Refusal = why };
}

/// <summary>What a process does with the requests that arrive on its data plane.</summary>
public interface IDataPlaneHandler
{
    /// <summary>
    /// Answers one request from <paramref name="peer"/>, presenting <paramref name="key"/>. It may
    /// refuse (a wrong key, a role that may not ask this); it must not throw for anything a peer sends.
    /// </summary>
    Task<Answer> HandleAsync(Peer peer, byte[] key, object request, CancellationToken cancellationToken);
}

/// <summary>Limits of a data plane; defaults in brackets.</summary>
public sealed record DataPlaneOptions
{
    /// <summary>Largest frame sent or accepted, in bytes [256 MiB]; a larger one closes its connection.</summary>
    public int MaxFrameBytes { get; init; } = 256 << 20;

    /// <summary>Connections a server keeps open at once; more are closed at once [512].</summary>
    public int MaxConnections { get; init; } = 512;

    /// <summary>Connections a client keeps to one endpoint [4].</summary>
    public int ConnectionsPerEndpoint { get; init; } = 4;

    /// <summary>How long a TLS handshake may take [10 s].</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a request may wait for its answer [2 min].</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(2);
}

/// <summary>
/// A process's data-plane listener: a TLS 1.3 handshake with the cluster's certificates on both
/// ends, the peer's role read from its certificate, then (<see cref="SealedStream"/>) request frames
/// answered one at a time per connection (a
/// client that wants more at once opens more connections). A request that cannot be decoded is
/// refused by name and the connection goes on; a frame that breaks the format closes its connection
/// and is logged once; nothing a peer sends stops the listener. It binds only where it is told
/// (loopback unless asked otherwise).
/// </summary>
public sealed partial class DataPlaneServer : IAsyncDisposable
{
    private readonly TcpListener listener;
    private readonly ClusterCertificates certificates;
    private readonly IDataPlaneHandler handler;
    private readonly DataPlaneOptions options;
    private readonly ILogger logger;
    private readonly WireCodec codec;
    private readonly CancellationTokenSource stopping = new();
    private readonly SslServerAuthenticationOptions tls;
    private int connections;
    private Task? accepting;
    private readonly TrafficCounter traffic = new();

    private DataPlaneServer(IPEndPoint bind, ClusterCertificates certificates, IDataPlaneHandler handler, DataPlaneOptions options, WireCodec codec, ILogger logger)
    {
        listener = new TcpListener(bind);
        this.certificates = certificates;
        this.handler = handler;
        this.options = options;
        this.codec = codec;
        this.logger = logger;
        tls = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(certificates.Own, null, offline: true),
            ClientCertificateRequired = true,
            RemoteCertificateValidationCallback = certificates.Validator(PeerRole.Node, PeerRole.Client),
            EnabledSslProtocols = SslProtocols.Tls13,
            CipherSuitesPolicy = TlsPolicy.CipherSuites,
            CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
        };
    }

    /// <summary>The address and port it listens on (the port the system chose when asked for 0).</summary>
    public IPEndPoint LocalEndpoint => (IPEndPoint)listener.LocalEndpoint;

    /// <summary>Bytes of frames read and written by every connection so far, counted as they pass.</summary>
    public (long Read, long Written) Traffic => (traffic.Read, traffic.Written);

    /// <summary>Starts listening on <paramref name="bind"/>; throws <see cref="SocketException"/> when the address cannot be bound.</summary>
    public static DataPlaneServer Start(IPEndPoint bind, ClusterCertificates certificates, IDataPlaneHandler handler, DataPlaneOptions options, WireCodec codec, ILogger logger)
    {
        var server = new DataPlaneServer(bind, certificates, handler, options, codec, logger);
        server.listener.Start(256);
        server.accepting = server.AcceptAsync();
        return server;
    }

    private async Task AcceptAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptSocketAsync(stopping.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (stopping.IsCancellationRequested)
                {
                    return;
                }

                continue;
            }

            if (Interlocked.Increment(ref connections) > options.MaxConnections)
            {
                Interlocked.Decrement(ref connections);
                LogTooMany(logger, socket.RemoteEndPoint, options.MaxConnections);
                socket.Dispose();
                continue;
            }

            _ = ServeAsync(socket);
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        var remote = socket.RemoteEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        socket.NoDelay = true;
        var network = new NetworkStream(socket, ownsSocket: true);
        var ssl = new SslStream(network, leaveInnerStreamOpen: true);
        FrameStream? frames = null;
        try
        {
            SealedStream records;
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token))
            {
                handshake.CancelAfter(options.HandshakeTimeout);
                await ssl.AuthenticateAsServerAsync(tls, handshake.Token).ConfigureAwait(false);
                records = await SealedStream.ServerAsync(network, ssl, handshake.Token).ConfigureAwait(false);
            }

            frames = new FrameStream(records, options.MaxFrameBytes, traffic);
            var role = certificates.Check(ssl.RemoteCertificate, out string? problem) ?? throw new AuthenticationException(problem);
            var peer = new Peer(role, remote);
            while (!stopping.IsCancellationRequested)
            {
                using var frame = await frames.ReadAsync(stopping.Token).ConfigureAwait(false);
                if (frame is null)
                {
                    return;
                }

                if (frame.Kind != FrameKind.Request)
                {
                    throw new FrameFormatException($"a {frame.Kind} frame where a request belongs");
                }

                await AnswerAsync(peer, frame, frames).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException or SocketException or FrameFormatException or OperationCanceledException or ObjectDisposedException)
        {
            if (!stopping.IsCancellationRequested && logger.IsEnabled(LogLevel.Information))
            {
                LogClosed(logger, remote, ex.Message);
            }
        }
        finally
        {
            if (frames is not null)
            {
                await frames.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                await ssl.DisposeAsync().ConfigureAwait(false);
                await network.DisposeAsync().ConfigureAwait(false);
            }

            Interlocked.Decrement(ref connections);
        }
    }

    private async Task AnswerAsync(Peer peer, Frame frame, FrameStream frames)
    {
        Answer answer;
        try
        {
            var request = codec.Decode(frame.Manifest, frame.Payload);
            answer = await handler.HandleAsync(peer, frame.Key, request, stopping.Token).ConfigureAwait(false);
        }
        catch (WireFormatException ex)
        {
            LogRefused(logger, peer, ex.Message);
            answer = Answer.Refuse(ex.Message);
        }

        if (answer.Message is { } message)
        {
            await frames.WriteAsync(FrameKind.Reply, frame.Id, default, WireCodec.ManifestOf(message), w => codec.Encode(w, message), stopping.Token).ConfigureAwait(false);
        }
        else if (answer.WriteData is { } write)
        {
            await frames.WriteAsync(FrameKind.Data, frame.Id, default, "", write, stopping.Token, answer.DataSize).ConfigureAwait(false);
        }
        else
        {
            byte[] why = System.Text.Encoding.UTF8.GetBytes(answer.Refusal ?? "no answer");
            await frames.WriteAsync(FrameKind.Error, frame.Id, default, "", w => w.Write(why), stopping.Token).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        listener.Stop();
        if (accepting is not null)
        {
            await accepting.ConfigureAwait(false);
        }

        stopping.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "data plane: refused a connection from {Remote}: {Limit} connections are open")]
    private static partial void LogTooMany(ILogger logger, EndPoint? remote, int limit);

    [LoggerMessage(Level = LogLevel.Information, Message = "data plane: closed the connection from {Remote}: {Reason}")]
    private static partial void LogClosed(ILogger logger, EndPoint remote, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "data plane: refused a request from {Peer}: {Reason}")]
    private static partial void LogRefused(ILogger logger, Peer peer, string reason);
}
