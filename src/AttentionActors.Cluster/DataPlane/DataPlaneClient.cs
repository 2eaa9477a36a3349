using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline.Wire;

namespace AttentionActors.Cluster.DataPlane;

/// <summary>A request the other end refused, or a data-plane endpoint that could not be reached or answered badly; the message says which and why.</summary>
public sealed class DataPlaneException : Exception
{
    /// <summary>The other end answered, refusing the request (as opposed to not being reached, or not answering).</summary>
    public bool Refused { get; init; }

    public DataPlaneException()
    {
    }

    public DataPlaneException(string message)
        : base(message)
    {
    }

    public DataPlaneException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Requests to other processes' data planes: TLS with this process's certificate, each server's
/// certificate checked against the cluster's CA and the roles it may have. Connections are kept per
/// endpoint (up to <see cref="DataPlaneOptions.ConnectionsPerEndpoint"/>), each carrying one request at
/// a time; a connection that fails is dropped, never reused.
/// </summary>
public sealed class DataPlaneClient : IAsyncDisposable
{
    private readonly ClusterCertificates certificates;
    private readonly DataPlaneOptions options;
    private readonly WireCodec codec;
    private readonly PeerRole[] servers;
    private readonly ConcurrentDictionary<string, Pool> pools = new(StringComparer.Ordinal);
    private readonly TrafficCounter traffic = new();
    private uint nextId;

    /// <summary>A client that presents <paramref name="certificates"/> and accepts servers of the <paramref name="servers"/> roles (a client talks to nodes only; a node to nodes and clients).</summary>
    public DataPlaneClient(ClusterCertificates certificates, DataPlaneOptions options, WireCodec codec, params PeerRole[] servers)
    {
        this.certificates = certificates;
        this.options = options;
        this.codec = codec;
        this.servers = servers.Length > 0 ? servers : [PeerRole.Node];
    }

    /// <summary>Bytes of frames this client has read and written so far, counted as they pass.</summary>
    public (long Read, long Written) Traffic => (traffic.Read, traffic.Written);

    /// <summary>Sends <paramref name="request"/> to <paramref name="endpoint"/> presenting <paramref name="key"/>, and returns the answer message.</summary>
    public async Task<object> RequestAsync(string endpoint, ReadOnlyMemory<byte> key, object request, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => await ExchangeAsync(endpoint, key, WireCodec.ManifestOf(request), w => codec.Encode(w, request), timeout, frame => frame.Kind == FrameKind.Reply
            ? codec.Decode(frame.Manifest, frame.Payload)
            : throw new DataPlaneException($"{endpoint} answered {WireCodec.ManifestOf(request)} with raw data"), cancellationToken).ConfigureAwait(false);

    /// <summary>Sends <paramref name="payload"/> as a request of type <paramref name="manifest"/> as it is, encoded or not (the tests send malformed ones so).</summary>
    internal Task<object> RequestRawAsync(string endpoint, ReadOnlyMemory<byte> key, string manifest, byte[] payload, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => ExchangeAsync(endpoint, key, manifest, w => w.Write(payload), timeout, frame => frame.Kind == FrameKind.Reply ? codec.Decode(frame.Manifest, frame.Payload) : frame, cancellationToken);

    /// <summary>Sends <paramref name="request"/> and reads the raw data it is answered with through <paramref name="decode"/>.</summary>
    public Task<T> RequestDataAsync<T>(string endpoint, ReadOnlyMemory<byte> key, object request, Func<ReadOnlySequence<byte>, T> decode, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => ExchangeAsync(endpoint, key, WireCodec.ManifestOf(request), w => codec.Encode(w, request), timeout, frame => frame.Kind == FrameKind.Data
            ? decode(new ReadOnlySequence<byte>(frame.Payload))
            : throw new DataPlaneException($"{endpoint} answered {WireCodec.ManifestOf(request)} with a {frame.Manifest} message instead of data"), cancellationToken);

    private async Task<T> ExchangeAsync<T>(string endpoint, ReadOnlyMemory<byte> key, string manifest, Action<IBufferWriter<byte>> write, TimeSpan? timeout, Func<Frame, T> read, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout ?? options.RequestTimeout);
        var pool = pools.GetOrAdd(endpoint, e => new Pool(e, options.ConnectionsPerEndpoint));
        Connection? connection = null;
        try
        {
            connection = await pool.TakeAsync(ConnectAsync, deadline.Token).ConfigureAwait(false);
            uint id = Interlocked.Increment(ref nextId);
            await connection.Frames.WriteAsync(FrameKind.Request, id, key, manifest, write, deadline.Token).ConfigureAwait(false);
            using var frame = await connection.Frames.ReadAsync(deadline.Token).ConfigureAwait(false)
                ?? throw new DataPlaneException($"{endpoint} closed the connection before answering {manifest}");
            if (frame.Id != id)
            {
                throw new DataPlaneException($"{endpoint} answered request {frame.Id} where {id} ({manifest}) was asked");
            }

            if (frame.Kind == FrameKind.Error)
            {
                string why = System.Text.Encoding.UTF8.GetString(frame.Payload.Span);
                pool.Return(connection);
                connection = null;
                throw new DataPlaneException($"{endpoint} refused {manifest}: {why}") { Refused = true };
            }

            var result = read(frame);
            pool.Return(connection);
            connection = null;
            return result;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new DataPlaneException($"{endpoint} did not answer {manifest} within {(timeout ?? options.RequestTimeout).TotalSeconds:F0} s");
        }
        catch (Exception ex) when (ex is IOException or SocketException or AuthenticationException or FrameFormatException or WireFormatException)
        {
            throw new DataPlaneException($"{manifest} to {endpoint} failed: {ex.Message}", ex);
        }
        finally
        {
            if (connection is not null)
            {
                pool.Drop();
                await connection.Frames.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private async Task<Connection> ConnectAsync(string endpoint, CancellationToken cancellationToken)
    {
        var (host, port) = DataEndpoint.Parse(endpoint);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(host, port, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var network = new NetworkStream(socket, ownsSocket: true);
        var ssl = new SslStream(network, leaveInnerStreamOpen: true);
        try
        {
            using var handshake = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            handshake.CancelAfter(options.HandshakeTimeout);
            await ssl.AuthenticateAsClientAsync(
                new SslClientAuthenticationOptions
                {
                    TargetHost = "attention",
                    ClientCertificateContext = SslStreamCertificateContext.Create(certificates.Own, null, offline: true),
                    RemoteCertificateValidationCallback = certificates.Validator(servers),
                    EnabledSslProtocols = SslProtocols.Tls13,
                    CipherSuitesPolicy = TlsPolicy.CipherSuites,
                    CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
                },
                handshake.Token).ConfigureAwait(false);
            var records = await SealedStream.ClientAsync(network, ssl, handshake.Token).ConfigureAwait(false);
            return new Connection(new FrameStream(records, options.MaxFrameBytes, traffic));
        }
        catch
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            await network.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var pool in pools.Values)
        {
            foreach (var connection in pool.Idle)
            {
                await connection.Frames.DisposeAsync().ConfigureAwait(false);
            }

            pool.Dispose();
        }

        pools.Clear();
    }

    private sealed record Connection(FrameStream Frames);

    /// <summary>Idle connections to one endpoint, and a cap on how many exist at once.</summary>
    private sealed class Pool(string endpoint, int size) : IDisposable
    {
        private readonly SemaphoreSlim slots = new(size, size);

        public ConcurrentBag<Connection> Idle { get; } = [];

        public async Task<Connection> TakeAsync(Func<string, CancellationToken, Task<Connection>> connect, CancellationToken cancellationToken)
        {
            await slots.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (Idle.TryTake(out var idle))
            {
                return idle;
            }

            try
            {
                return await connect(endpoint, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                slots.Release();
                throw;
            }
        }

        public void Return(Connection connection)
        {
            Idle.Add(connection);
            slots.Release();
        }

        /// <summary>A taken connection failed and was closed: its slot is free again.</summary>
        public void Drop() => slots.Release();

        public void Dispose() => slots.Dispose();
    }
}

/// <summary>A data-plane endpoint written as <c>host:port</c> (an IPv6 address in brackets).</summary>
public static class DataEndpoint
{
    public static (string Host, int Port) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
        {
            throw new FormatException($"'{text}' is not host:port (a port from 1 to 65535)");
        }

        string host = text[..colon].Trim('[', ']');
        return host.Length > 0 ? (host, port) : throw new FormatException($"'{text}' names no host");
    }

    public static string Format(string host, int port) => host.Contains(':', StringComparison.Ordinal) ? $"[{host}]:{port}" : $"{host}:{port}";

    /// <summary>Whether <paramref name="bind"/> listens on every interface.</summary>
    public static bool IsWildcard(string bind) => bind is "0.0.0.0" or "::" or "[::]";

    /// <summary>
    /// The address peers reach a process at that listens on every interface and was told no address
    /// to advertise: the local address its route toward <paramref name="peerHost"/> leaves from (in a
    /// container, its address on the network it shares with the cluster). Falls back to the host name.
    /// </summary>
    public static string Toward(string peerHost)
    {
        try
        {
            var target = System.Net.IPAddress.TryParse(peerHost.Trim('[', ']'), out var ip) ? ip : System.Net.Dns.GetHostAddresses(peerHost).First();
            using var probe = new System.Net.Sockets.Socket(target.AddressFamily, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);

            // A datagram socket's connect sends nothing: it only picks the route and so the local address.
            probe.Connect(target, 9);
            return ((System.Net.IPEndPoint)probe.LocalEndPoint!).Address.ToString();
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or InvalidOperationException or ArgumentException)
        {
            return System.Net.Dns.GetHostName();
        }
    }
}
