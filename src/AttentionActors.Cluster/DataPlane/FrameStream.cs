using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace AttentionActors.Cluster.DataPlane;

/// <summary>What a data-plane frame is.</summary>
public enum FrameKind : byte
{
    /// <summary>A request: a wire message the other end answers with one <see cref="Reply"/>, <see cref="Data"/> or <see cref="Error"/> of the same id.</summary>
    Request = 1,

    /// <summary>An answer that is a wire message.</summary>
    Reply = 2,

    /// <summary>An answer that is raw data (a shard's tensors), read by a decoder the requester knows.</summary>
    Data = 3,

    /// <summary>An answer saying why the request was refused (UTF-8 text).</summary>
    Error = 4,
}

/// <summary>One frame read from a connection; its payload lives in a pooled buffer until the frame is disposed.</summary>
public sealed class Frame(FrameKind kind, uint id, byte[] key, string manifest, byte[] buffer, int payloadStart, int payloadLength) : IDisposable
{
    private byte[]? buffer = buffer;

    public FrameKind Kind { get; } = kind;

    /// <summary>Pairs an answer with its request.</summary>
    public uint Id { get; } = id;

    /// <summary>The capability the frame presents (a job's store or inbox key); empty when none.</summary>
    public byte[] Key { get; } = key;

    /// <summary>The wire message type of the payload (<see cref="Pipeline.Wire.WireCodec"/>); empty for data and errors.</summary>
    public string Manifest { get; } = manifest;

    public ReadOnlyMemory<byte> Payload => buffer is null ? throw new ObjectDisposedException(nameof(Frame)) : buffer.AsMemory(payloadStart, payloadLength);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref buffer, null) is { } held)
        {
            ArrayPool<byte>.Shared.Return(held);
        }
    }
}

/// <summary>A frame that breaks the format (too long, a header that does not add up): the connection it came on is closed.</summary>
public sealed class FrameFormatException : Exception
{
    public FrameFormatException()
    {
    }

    public FrameFormatException(string message)
        : base(message)
    {
    }

    public FrameFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Length-prefixed frames on a stream (a TLS connection): <c>u32 length · u8 kind · u32 id · u8 key
/// length · key · u16 manifest length · manifest · payload</c>, little-endian. A frame is written in
/// one write from a pooled buffer and read into one pooled buffer whose size is checked against the
/// connection's limit before anything is allocated, so a peer can never make this end hold more
/// than one frame's bytes per connection.
/// </summary>
public sealed class FrameStream(Stream stream, int maxFrameBytes, TrafficCounter? traffic = null) : IAsyncDisposable
{
    private readonly TrafficCounter traffic = traffic ?? new TrafficCounter();

    private const int HeaderBytes = 4 + 1 + 4 + 1 + 2;
    private readonly SemaphoreSlim writing = new(1, 1);
    private readonly byte[] lengthBuffer = new byte[4];

    public int MaxFrameBytes { get; } = maxFrameBytes;

    /// <summary>
    /// Writes one frame whose payload <paramref name="payload"/> writes; waits for any write in
    /// progress. <paramref name="sizeHint"/>, the payload's size when known, rents the buffer that
    /// large at once instead of growing it.
    /// </summary>
    public async Task WriteAsync(FrameKind kind, uint id, ReadOnlyMemory<byte> key, string manifest, Action<IBufferWriter<byte>> payload, CancellationToken cancellationToken, int sizeHint = 0)
    {
        ArgumentNullException.ThrowIfNull(payload);
        if (key.Length > byte.MaxValue || manifest.Length > 256)
        {
            throw new ArgumentException($"a frame key of {key.Length} bytes or manifest of {manifest.Length} characters is too long");
        }

        var buffer = new PooledBufferWriter(HeaderBytes + key.Length + (manifest.Length * 3) + sizeHint);
        try
        {
            // After the length (written last): kind · id · key length · key · manifest length · manifest.
            var header = buffer.GetSpan(HeaderBytes + key.Length + (manifest.Length * 3));
            header[0] = (byte)kind;
            BinaryPrimitives.WriteUInt32LittleEndian(header[1..], id);
            header[5] = (byte)key.Length;
            key.Span.CopyTo(header[6..]);
            int manifestBytes = Encoding.UTF8.GetBytes(manifest, header[(8 + key.Length)..]);
            BinaryPrimitives.WriteUInt16LittleEndian(header[(6 + key.Length)..], (ushort)manifestBytes);
            buffer.Advance(8 + key.Length + manifestBytes);
            payload(buffer);
            if (buffer.Written - 4 > MaxFrameBytes)
            {
                throw new FrameFormatException($"a {manifest} frame of {buffer.Written:N0} bytes is over the data plane's {MaxFrameBytes:N0}-byte frame limit");
            }

            BinaryPrimitives.WriteUInt32LittleEndian(buffer.Array, (uint)(buffer.Written - 4));
            await writing.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await stream.WriteAsync(buffer.Array.AsMemory(0, buffer.Written), cancellationToken).ConfigureAwait(false);
                await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
                traffic.AddWritten(buffer.Written);
            }
            finally
            {
                writing.Release();
            }
        }
        finally
        {
            buffer.Dispose();
        }
    }

    /// <summary>The next frame, or null at the end of the stream; throws <see cref="FrameFormatException"/> for a frame that breaks the format.</summary>
    public async Task<Frame?> ReadAsync(CancellationToken cancellationToken)
    {
        int got = 0;
        while (got < 4)
        {
            int n = await stream.ReadAsync(lengthBuffer.AsMemory(got), cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                return got == 0 ? null : throw new FrameFormatException($"the stream ended inside a frame's length ({got} of 4 bytes)");
            }

            got += n;
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(lengthBuffer);
        if (length > MaxFrameBytes || length < HeaderBytes - 4)
        {
            throw new FrameFormatException($"a frame of {length:N0} bytes (this end takes {HeaderBytes - 4} to {MaxFrameBytes:N0})");
        }

        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        try
        {
            await stream.ReadExactlyAsync(buffer.AsMemory(0, (int)length), cancellationToken).ConfigureAwait(false);
            traffic.AddRead(length + 4);
            var kind = (FrameKind)buffer[0];
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(1));
            int keyLength = buffer[5];
            if (!Enum.IsDefined(kind) || 6 + keyLength + 2 > length)
            {
                throw new FrameFormatException($"a frame of kind {(int)kind} with a {keyLength}-byte key in {length} bytes");
            }

            var key = buffer.AsSpan(6, keyLength).ToArray();
            int manifestLength = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(6 + keyLength));
            int payloadStart = 8 + keyLength + manifestLength;
            if (payloadStart > length || manifestLength > 256)
            {
                throw new FrameFormatException($"a frame whose {manifestLength}-byte manifest runs past its {length} bytes");
            }

            string manifest = Encoding.UTF8.GetString(buffer, 8 + keyLength, manifestLength);
            var frame = new Frame(kind, id, key, manifest, buffer, payloadStart, (int)length - payloadStart);
            buffer = null;
            return frame;
        }
        catch (EndOfStreamException)
        {
            throw new FrameFormatException($"the stream ended inside a {length:N0}-byte frame");
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stream.DisposeAsync().ConfigureAwait(false);
        writing.Dispose();
    }

    /// <summary>An <see cref="IBufferWriter{T}"/> over arrays from the shared pool, grown by doubling; the first four bytes are kept for the length.</summary>
    private sealed class PooledBufferWriter(int initial) : IBufferWriter<byte>, IDisposable
    {
        public byte[] Array { get; private set; } = ArrayPool<byte>.Shared.Rent(Math.Max(initial, 64 << 10));

        public int Written { get; private set; } = 4;

        public void Advance(int count) => Written += count;

        public Memory<byte> GetMemory(int sizeHint = 0)
        {
            Ensure(sizeHint);
            return Array.AsMemory(Written);
        }

        public Span<byte> GetSpan(int sizeHint = 0)
        {
            Ensure(sizeHint);
            return Array.AsSpan(Written);
        }

        public void Dispose() => ArrayPool<byte>.Shared.Return(Array);

        private void Ensure(int sizeHint)
        {
            long needed = (long)Written + Math.Max(sizeHint, 1);
            if (needed <= Array.Length)
            {
                return;
            }

            var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(Math.Max(needed, 2L * Array.Length), System.Array.MaxLength));
            Array.AsSpan(0, Written).CopyTo(larger);
            ArrayPool<byte>.Shared.Return(Array);
            Array = larger;
        }
    }
}

/// <summary>Bytes of data-plane frames read and written, counted as they pass; one counter serves every connection of a server or a client.</summary>
public sealed class TrafficCounter
{
    private long read;
    private long written;

    public long Read => Interlocked.Read(ref read);

    public long Written => Interlocked.Read(ref written);

    internal void AddRead(long bytes) => Interlocked.Add(ref read, bytes);

    internal void AddWritten(long bytes) => Interlocked.Add(ref written, bytes);
}
