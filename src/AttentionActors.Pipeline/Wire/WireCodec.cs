using System.Buffers;
using System.Collections.Concurrent;
using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using MessagePack;

namespace AttentionActors.Pipeline.Wire;

/// <summary>A message that cannot be decoded or fails its checks; the text names the message and the fault.</summary>
public sealed class WireFormatException : Exception
{
    public WireFormatException()
    {
    }

    public WireFormatException(string message)
        : base(message)
    {
    }

    public WireFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The one registry and codec of every message that may cross processes (<see cref="IWireMessage"/>).
/// Each travels as a MessagePack array <c>[version, fields…]</c> under a manifest naming its type;
/// tensors and partials are single <c>bin</c> blobs of little-endian float32. Decoding refuses an
/// unknown manifest, another version, a truncated or oversized payload, and checks every field
/// before use: ids and counts in range, byte counts against the shapes they claim, geometries
/// through <see cref="AttentionGeometry.Create"/>, shard places inside the job, shard ids unique.
/// Values (finite numbers, canonical tree nodes) are checked where they are used — worker, reducer,
/// client — exactly as in one process. Every failure is a <see cref="WireFormatException"/> naming
/// the message and the field.
/// </summary>
public sealed partial class WireCodec
{
    /// <summary>The wire format's version; a payload of another version is refused.</summary>
    public const int Version = 1;

    /// <summary>Longest text field accepted (error messages, reasons), in characters.</summary>
    public const int MaxText = 16 << 10;

    private delegate void Writer(WireCodec codec, ref MessagePackWriter writer, object message);

    internal delegate object Reader(WireCodec codec, ref MessagePackReader reader);

    private static readonly ConcurrentDictionary<Type, (string Manifest, Writer Write)> ByType = new();
    private static readonly ConcurrentDictionary<string, (int Fields, Reader Read)> ByManifest = new(StringComparer.Ordinal);

    private readonly ExtendedActorSystem? system;

    static WireCodec()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("the wire format carries little-endian float32; this machine is big-endian");
        }

        Register<ShardStarted>("ShardStarted", 4, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Grant); }, (c, ref r) => new ShardStarted(Job(ref r), r.ReadInt32(), Attempt(ref r), Grant(ref r)));
        Register<ShardFailed>("ShardFailed", 6, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Grant); w.Write(m.Error); w.Write((int)m.Kind); }, (c, ref r) => new ShardFailed(Job(ref r), r.ReadInt32(), Attempt(ref r), Grant(ref r), Text(ref r, "error"), FailureKind(r.ReadInt32())));
        Register<ShardMerged>("ShardMerged", 3, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); }, (c, ref r) => new ShardMerged(Job(ref r), r.ReadInt32(), Attempt(ref r)));
        Register<AuditMismatch>("AuditMismatch", 5, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.FirstAttempt); w.Write(m.AuditAttempt); w.Write(m.Detail); }, (c, ref r) => new AuditMismatch(Job(ref r), r.ReadInt32(), Attempt(ref r), Attempt(ref r), Text(ref r, "detail")));
        Register<WorkerReady>("WorkerReady", 1, (c, ref w, m) => w.Write(m.Slots), (c, ref r) => new WorkerReady(NonNegative(r.ReadInt32(), "slots")));
        Register<ShardDispatched>("ShardDispatched", 4, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); WriteRef(ref w, m.Worker); }, (c, ref r) => new ShardDispatched(Job(ref r), r.ReadInt32(), Attempt(ref r), c.ReadRef(ref r, "worker")));
        Register<ShardUndeliverable>("ShardUndeliverable", 4, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Reason); }, (c, ref r) => new ShardUndeliverable(Job(ref r), r.ReadInt32(), Attempt(ref r), Text(ref r, "reason")));
        Register<JobTablesQuery>("JobTablesQuery", 0, (c, ref w, m) => { }, (c, ref r) => new JobTablesQuery());
        Register<JobTables>("JobTables", 2, (c, ref w, m) => { w.Write(m.Role); WriteJobs(ref w, m.Jobs); }, (c, ref r) => new JobTables(Text(ref r, "role"), ReadJobs(ref r)));
        Register<CancelJob>("CancelJob", 2, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.Reason); }, (c, ref r) => new CancelJob(Job(ref r), Text(ref r, "reason")));
        Register<JobEnded>("JobEnded", 2, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.Why); }, (c, ref r) => new JobEnded(Job(ref r), Text(ref r, "why")));
        Register<ShardsSent>("ShardsSent", 1, (c, ref w, m) => WriteJob(ref w, m.Job), (c, ref r) => new ShardsSent(Job(ref r)));
        Register<FailJob>("FailJob", 2, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.Reason); }, (c, ref r) => new FailJob(Job(ref r), Text(ref r, "reason")));
        Register<AttentionCompleted>("AttentionCompleted", 2, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.RowsSent); }, (c, ref r) => new AttentionCompleted(Job(ref r), NonNegative(r.ReadInt64(), "rows sent")));
        Register<AttentionFailed>("AttentionFailed", 4, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.Reason); w.Write(m.Cancelled); w.Write(m.NodeLost); }, (c, ref r) => new AttentionFailed(Job(ref r), Text(ref r, "reason"), r.ReadBoolean(), r.ReadBoolean()));
        Register<JobProgress>("JobProgress", 6, WriteProgress, ReadProgress);
        Register<WatchJob>("WatchJob", 2, (c, ref w, m) => { WriteRef(ref w, m.Coordinator); WriteRef(ref w, m.Reducer); }, (c, ref r) => new WatchJob(c.ReadRef(ref r, "coordinator"), c.ReadRef(ref r, "reducer")));
        Register<ComputeShard>("ComputeShard", 12, WriteCompute, ReadCompute);
        Register<ExpectShards>("ExpectShards", 9, WriteExpect, ReadExpect);
        Register<PartialComputed>("PartialComputed", 5, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Grant); WritePartials(ref w, m.Partials); }, (c, ref r) => new PartialComputed(Job(ref r), r.ReadInt32(), Attempt(ref r), Grant(ref r), ReadPartials(ref r)));
        Register<CoverageComputed>("CoverageComputed", 5, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Grant); WriteCoverage(ref w, m.Parts); }, (c, ref r) => new CoverageComputed(Job(ref r), r.ReadInt32(), Attempt(ref r), Grant(ref r), ReadCoverage(ref r)));
        Register<WeightsComputed>("WeightsComputed", 5, (c, ref w, m) => { WriteJob(ref w, m.Job); w.Write(m.ShardId); w.Write(m.Attempt); w.Write(m.Grant); WriteCells(ref w, m.Cells); }, (c, ref r) => new WeightsComputed(Job(ref r), r.ReadInt32(), Attempt(ref r), Grant(ref r), ReadCells(ref r)));
        Register<RowsFinished>("RowsFinished", 8, WriteRows, ReadRows);
        Register<CoverageFinished>("CoverageFinished", 6, WriteCoverageFinished, ReadCoverageFinished);
        Register<WeightsFinished>("WeightsFinished", 6, WriteWeightsFinished, ReadWeightsFinished);
    }

    /// <param name="system">Resolves the actor references that arrive in messages; null for a codec that carries none.</param>
    public WireCodec(ExtendedActorSystem? system) => this.system = system;

    /// <summary>Every wire message type and its manifest: the protocol, in one list.</summary>
    public static IReadOnlyDictionary<Type, string> Manifests => ByType.ToDictionary(e => e.Key, e => e.Value.Manifest);

    /// <summary>The manifest of <paramref name="message"/>'s type; throws <see cref="ArgumentException"/> for a type with no wire form.</summary>
    public static string ManifestOf(object message)
        => ByType.TryGetValue(message.GetType(), out var entry) ? entry.Manifest : throw new ArgumentException($"{message.GetType().Name} has no wire form", nameof(message));

    /// <summary>Writes <paramref name="message"/> as <c>[version, fields…]</c>.</summary>
    public void Encode(IBufferWriter<byte> output, object message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!ByType.TryGetValue(message.GetType(), out var entry))
        {
            throw new ArgumentException($"{message.GetType().Name} has no wire form", nameof(message));
        }

        var writer = new MessagePackWriter(output);
        entry.Write(this, ref writer, message);
        writer.Flush();
    }

    public byte[] Encode(object message)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        Encode(buffer, message);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Parses and checks one payload of type <paramref name="manifest"/>; throws <see cref="WireFormatException"/> saying what is wrong.</summary>
    public object Decode(string manifest, ReadOnlyMemory<byte> payload) => Decode(manifest, new ReadOnlySequence<byte>(payload));

    /// <inheritdoc cref="Decode(string, ReadOnlyMemory{byte})"/>
    public object Decode(string manifest, ReadOnlySequence<byte> payload)
    {
        if (!ByManifest.TryGetValue(manifest, out var entry))
        {
            throw new WireFormatException($"a {payload.Length}-byte message of unknown type '{Shorten(manifest)}'");
        }

        var reader = new MessagePackReader(payload);
        try
        {
            int fields = reader.ReadArrayHeader();
            int version = fields > 0 ? reader.ReadInt32() : -1;
            if (version != Version)
            {
                throw new WireFormatException($"wire version {version}; this node speaks version {Version}");
            }

            if (fields != entry.Fields)
            {
                throw new WireFormatException($"{fields - 1} fields; version {Version} has {entry.Fields - 1}");
            }

            var message = entry.Read(this, ref reader);
            if (!reader.End)
            {
                throw new WireFormatException($"{payload.Length - reader.Consumed} bytes after the message's last field");
            }

            return message;
        }
        catch (WireFormatException ex)
        {
            throw new WireFormatException($"{manifest} message: {ex.Message}");
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or AttentionInputException or ArgumentException or OverflowException or InvalidOperationException)
        {
            throw new WireFormatException($"{manifest} message of {payload.Length} bytes is malformed: {ex.Message}");
        }
    }

    /// <summary>Adds a message type to the registry (the cluster's data-plane messages register themselves so); a manifest names one type only.</summary>
    internal static void Register<T>(string manifest, int fields, WriterOf<T> write, Reader read)
    {
        if (ByManifest.ContainsKey(manifest) && !ByType.ContainsKey(typeof(T)))
        {
            throw new InvalidOperationException($"manifest {manifest} already names another type");
        }

        void Write(WireCodec c, ref MessagePackWriter w, object m)
        {
            w.WriteArrayHeader(fields + 1);
            w.Write(Version);
            write(c, ref w, (T)m);
        }

        ByType[typeof(T)] = (manifest, Write);
        ByManifest[manifest] = (fields + 1, read);
    }

    internal delegate void WriterOf<in T>(WireCodec codec, ref MessagePackWriter writer, T message);

    private static ShardFailure FailureKind(int kind) => Enum.IsDefined((ShardFailure)kind) ? (ShardFailure)kind : throw new WireFormatException($"unknown failure kind {kind}");

    private static string Shorten(string text) => text.Length <= 64 ? text : text[..64] + "…";
}
