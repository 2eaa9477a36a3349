using System.Runtime.InteropServices;
using AttentionActors.Actors;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Google.Protobuf;
using P = AttentionActors.Cluster.Wire.Proto;

namespace AttentionActors.Cluster.Wire;

/// <summary>A message that arrived: for which actor, from whom, and what.</summary>
internal readonly record struct Delivered(ActorAddress Target, IActorRef Sender, object Message);

/// <summary>An actor's place in the cluster: the node it lives on and its name there.</summary>
public readonly record struct ActorAddress(string Node, string Name)
{
    public override string ToString() => $"{Node}/{Name}";
}

/// <summary>
/// The one codec of every message that crosses processes (see <c>Protos/attention.proto</c>).
/// Decoding checks the version, that a body is present, byte counts (whole float32 values, counts
/// that match the shapes) and geometries (via <see cref="AttentionGeometry.Create"/>) and throws
/// <see cref="WireFormatException"/> naming the message and what is wrong; values are checked where
/// they are used (workers, reducer, client), as in one process.
/// </summary>
internal sealed class WireCodec
{
    public const uint Version = 1;

    private readonly Func<ActorAddress, IActorRef> resolve;

    static WireCodec()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("the wire format carries little-endian float32; this machine is big-endian");
        }
    }

    /// <param name="resolve">The reference for an address that arrived in a message (local actor or remote).</param>
    public WireCodec(Func<ActorAddress, IActorRef> resolve) => this.resolve = resolve;

    /// <summary>The address an actor reference stands for on the wire (the empty address for no sender).</summary>
    public static ActorAddress AddressOf(IActorRef? actor) => actor switch
    {
        null or NoSender => default,
        IRemoteAddressable remote => remote.Address,
        _ when actor.Path.IsLocal => new ActorAddress(actor.Path.Address["local://".Length..], actor.Path.Name),
        _ => throw new ArgumentException($"actor {actor.Path} has no cluster address"),
    };

    public static byte[] Encode(object message, ActorAddress target, IActorRef? sender)
    {
        var envelope = new P.Envelope { Version = Version, Target = Address(target), Sender = Address(AddressOf(sender)) };
        switch (message)
        {
            case SubmitAttention m: envelope.Submit = new P.SubmitAttention { Job = m.Job.Value, Geometry = Geometry(m.Geometry), MaxShardBytes = m.MaxShardBytes, Audit = m.Audit }; break;
            case TensorChunk m: envelope.Chunk = new P.TensorChunk { Job = m.Job.Value, Tensor = (P.TensorRole)m.Tensor, Offset = m.Offset, Data = Bytes(m.Data.Span), Last = m.Last }; break;
            case WatchJob m: envelope.Accepted = new P.JobAccepted { Coordinator = Address(AddressOf(m.Coordinator)), Reducer = Address(AddressOf(m.Reducer)) }; break;
            case ComputeShard m: envelope.Compute = Compute(m); break;
            case ShardStarted m: envelope.Started = new P.ShardStarted { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt }; break;
            case ShardFailed m: envelope.Failed = new P.ShardFailed { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt, Error = m.Error }; break;
            case ShardPoisoned m: envelope.Poisoned = new P.ShardPoisoned { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt, Deliveries = m.Deliveries }; break;
            case PartialComputed m: envelope.Partial = Partial(m); break;
            case CoverageComputed m:
                envelope.Coverage = new P.CoverageComputed { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt, Keys = m.Parts.Keys, Values = Bytes(m.Parts.Values.AsSpan(0, m.Parts.Nodes.Length * m.Parts.Keys)) };
                envelope.Coverage.NodeLevels.AddRange(m.Parts.Nodes.Select(n => n.Level));
                envelope.Coverage.NodeIndices.AddRange(m.Parts.Nodes.Select(n => n.Index));
                break;
            case WeightsComputed m:
                envelope.Weights = new P.WeightsComputed { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt, CellRowStart = m.Cells.Range.CellRowStart, CellRowEnd = m.Cells.Range.CellRowEnd, CellColStart = m.Cells.Range.CellColStart, CellColEnd = m.Cells.Range.CellColEnd, DataBlockEnd = m.Cells.Range.DataBlockEnd, Values = Bytes(m.Cells.Values) };
                break;
            case WeightsFinished m: envelope.WeightsFinished = new P.WeightsFinished { Job = m.Job.Value, CellRowStart = m.CellRowStart, CellRowCount = m.CellRowCount, CellColStart = m.CellColStart, CellColCount = m.CellColCount, Values = Bytes(m.Values) }; break;
            case CoverageFinished m: envelope.CoverageFinished = new P.CoverageFinished { Job = m.Job.Value, Batch = m.Batch, KvHead = m.KvHead, KeyStart = m.KeyStart, KeyCount = m.KeyCount, Coverage = Bytes(m.Coverage) }; break;
            case ExpectShards m:
                var expect = new P.ExpectShards { Job = m.Job.Value, Geometry = Geometry(m.Geometry), Client = Address(AddressOf(m.Client)), Coordinator = Address(AddressOf(m.Coordinator)) };
                expect.Shards.AddRange(m.Shards.Select(Shard));
                expect.Audited.AddRange(m.Audited ?? []);
                expect.MaskBlocks = m.MaskBlocks is { } blocks ? ByteString.CopyFrom(blocks.Bits) : ByteString.Empty;
                envelope.Expect = expect;
                break;
            case FailJob m: envelope.FailJob = new P.FailJob { Job = m.Job.Value, Reason = m.Reason }; break;
            case ShardMerged m: envelope.Merged = new P.ShardMerged { Job = m.Job.Value, ShardId = m.ShardId, Worker = m.Worker, Audit = m.Audit }; break;
            case AuditMismatch m: envelope.AuditMismatch = new P.AuditMismatch { Job = m.Job.Value, ShardId = m.ShardId, Reason = m.Reason }; break;
            case CancelJob m: envelope.Cancel = new P.CancelJob { Job = m.Job.Value, Reason = m.Reason }; break;
            case JobEnded m: envelope.Ended = new P.JobEnded { Job = m.Job.Value, Why = m.Why }; break;
            case RowsFinished m:
                envelope.Rows = new P.RowsFinished { Job = m.Job.Value, Batch = m.Batch, Head = m.Head, RowStart = m.RowStart, RowCount = m.RowCount, Output = Bytes(m.Output), Lse = Bytes(m.Lse) };
                if (m.Entropy is not null)
                {
                    envelope.Rows.Entropy = Bytes(m.Entropy);
                }

                break;
            case JobProgress m: envelope.Progress = new P.JobProgress { Job = m.Job.Value, ShardsDone = m.ShardsDone, ShardsTotal = m.ShardsTotal, FlopsDone = m.FlopsDone, FlopsTotal = m.FlopsTotal, ElapsedTicks = m.Elapsed.Ticks }; break;
            case AttentionCompleted m: envelope.Completed = new P.AttentionCompleted { Job = m.Job.Value, RowsSent = m.RowsSent }; break;
            case AttentionFailed m: envelope.AttentionFailed = new P.AttentionFailed { Job = m.Job.Value, Reason = m.Reason, Cancelled = m.Cancelled }; break;
            case NodeHeartbeat m:
                var beat = new P.Heartbeat { Node = m.Node, Host = m.Host, ProcessId = m.ProcessId, Simd = m.Simd, Threads = m.Threads, StartedUnixMs = m.StartedUnixMs, SentUnixMs = m.SentUnixMs, ShardsDone = m.ShardsDone, InFlight = m.InFlight, Leaving = m.Leaving };
                beat.Roles.AddRange(m.Roles);
                beat.EndedJobs.AddRange(m.EndedJobs ?? []);
                envelope.Heartbeat = beat;
                break;
            default: throw new ArgumentException($"{message.GetType().Name} has no wire form", nameof(message));
        }

        return envelope.ToByteArray();
    }

    /// <summary>Parses and checks one message body; throws <see cref="WireFormatException"/> saying what is wrong.</summary>
    public Delivered Decode(ReadOnlySpan<byte> body)
    {
        P.Envelope envelope;
        try
        {
            envelope = P.Envelope.Parser.ParseFrom(body);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new WireFormatException($"a {body.Length}-byte message is not a protocol-buffer envelope: {ex.Message}");
        }

        if (envelope.Version != Version)
        {
            throw new WireFormatException($"a {envelope.BodyCase} message has wire version {envelope.Version}; this node speaks version {Version}");
        }

        if (envelope.Target is null || envelope.Target.Name.Length == 0)
        {
            throw new WireFormatException($"a {envelope.BodyCase} message names no target actor");
        }

        string what = envelope.BodyCase.ToString();
        try
        {
            object message = envelope.BodyCase switch
            {
                P.Envelope.BodyOneofCase.Submit => new SubmitAttention(Job(envelope.Submit.Job), Geometry(envelope.Submit.Geometry), envelope.Submit.MaxShardBytes, envelope.Submit.Audit is >= 0 and <= 1 ? envelope.Submit.Audit : throw new WireFormatException($"audit fraction {envelope.Submit.Audit} is outside [0, 1]")),
                P.Envelope.BodyOneofCase.Chunk => Chunk(envelope.Chunk),
                P.Envelope.BodyOneofCase.Accepted => new WatchJob(Ref(envelope.Accepted.Coordinator, "coordinator"), Ref(envelope.Accepted.Reducer, "reducer")),
                P.Envelope.BodyOneofCase.Compute => Compute(envelope.Compute),
                P.Envelope.BodyOneofCase.Started => new ShardStarted(Job(envelope.Started.Job), envelope.Started.ShardId, envelope.Started.Attempt),
                P.Envelope.BodyOneofCase.Failed => new ShardFailed(Job(envelope.Failed.Job), envelope.Failed.ShardId, envelope.Failed.Attempt, envelope.Failed.Error),
                P.Envelope.BodyOneofCase.Poisoned => new ShardPoisoned(Job(envelope.Poisoned.Job), envelope.Poisoned.ShardId, envelope.Poisoned.Attempt, envelope.Poisoned.Deliveries),
                P.Envelope.BodyOneofCase.Partial => Partial(envelope.Partial),
                P.Envelope.BodyOneofCase.Coverage => Coverage(envelope.Coverage),
                P.Envelope.BodyOneofCase.Weights => Weights(envelope.Weights),
                P.Envelope.BodyOneofCase.WeightsFinished => WeightsBand(envelope.WeightsFinished),
                P.Envelope.BodyOneofCase.CoverageFinished => new CoverageFinished(Job(envelope.CoverageFinished.Job), envelope.CoverageFinished.Batch, envelope.CoverageFinished.KvHead, envelope.CoverageFinished.KeyStart, envelope.CoverageFinished.KeyCount, Floats(envelope.CoverageFinished.Coverage, "coverage", Math.Max(0, envelope.CoverageFinished.KeyCount))),
                P.Envelope.BodyOneofCase.Expect => Expect(envelope.Expect),
                P.Envelope.BodyOneofCase.FailJob => new FailJob(Job(envelope.FailJob.Job), envelope.FailJob.Reason),
                P.Envelope.BodyOneofCase.Merged => new ShardMerged(Job(envelope.Merged.Job), envelope.Merged.ShardId, envelope.Merged.Worker, envelope.Merged.Audit),
                P.Envelope.BodyOneofCase.AuditMismatch => new AuditMismatch(Job(envelope.AuditMismatch.Job), envelope.AuditMismatch.ShardId, envelope.AuditMismatch.Reason),
                P.Envelope.BodyOneofCase.Cancel => new CancelJob(Job(envelope.Cancel.Job), envelope.Cancel.Reason),
                P.Envelope.BodyOneofCase.Ended => new JobEnded(Job(envelope.Ended.Job), envelope.Ended.Why),
                P.Envelope.BodyOneofCase.Rows => Rows(envelope.Rows),
                P.Envelope.BodyOneofCase.Progress => new JobProgress(Job(envelope.Progress.Job), envelope.Progress.ShardsDone, envelope.Progress.ShardsTotal, envelope.Progress.FlopsDone, envelope.Progress.FlopsTotal, TimeSpan.FromTicks(envelope.Progress.ElapsedTicks)),
                P.Envelope.BodyOneofCase.Completed => new AttentionCompleted(Job(envelope.Completed.Job), envelope.Completed.RowsSent),
                P.Envelope.BodyOneofCase.AttentionFailed => new AttentionFailed(Job(envelope.AttentionFailed.Job), envelope.AttentionFailed.Reason, envelope.AttentionFailed.Cancelled),
                P.Envelope.BodyOneofCase.Heartbeat => Heartbeat(envelope.Heartbeat),
                _ => throw new WireFormatException("the envelope carries no message"),
            };
            var sender = envelope.Sender is { Node.Length: > 0 } s ? resolve(new ActorAddress(s.Node, s.Name)) : NoSender.Instance;
            return new Delivered(new ActorAddress(envelope.Target.Node, envelope.Target.Name), sender, message);
        }
        catch (WireFormatException ex)
        {
            throw new WireFormatException($"{what} message to {envelope.Target.Node}/{envelope.Target.Name}: {ex.Message}");
        }
        catch (AttentionInputException ex)
        {
            throw new WireFormatException($"{what} message to {envelope.Target.Node}/{envelope.Target.Name}: {ex.Message}");
        }
    }

    private static JobId Job(string value)
        => value.Length is > 0 and <= 64 ? new JobId(value) : throw new WireFormatException($"job id of {value.Length} characters (1 to 64 allowed)");

    private static P.ActorAddress Address(ActorAddress address) => new() { Node = address.Node ?? "", Name = address.Name ?? "" };

    private IActorRef Ref(P.ActorAddress? address, string role)
        => address is { Node.Length: > 0, Name.Length: > 0 } ? resolve(new ActorAddress(address.Node, address.Name)) : throw new WireFormatException($"no {role} address");

    private static ByteString Bytes(ReadOnlySpan<float> values) => ByteString.CopyFrom(MemoryMarshal.AsBytes(values));

    /// <summary>The float32 values of a bytes field, which must hold exactly <paramref name="expected"/> of them when given.</summary>
    private static float[] Floats(ByteString bytes, string field, long? expected = null)
    {
        if (bytes.Length % sizeof(float) != 0)
        {
            throw new WireFormatException($"{field} holds {bytes.Length} bytes, not a whole number of float32 values");
        }

        int count = bytes.Length / sizeof(float);
        if (expected is { } n && n != count)
        {
            throw new WireFormatException($"{field} holds {count} float32 values; its shape needs {n}");
        }

        var values = new float[count];
        bytes.Span.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    private static P.Geometry Geometry(AttentionGeometry g) => new()
    {
        Q = Shape(g.QueryShape),
        K = Shape(g.KeyShape),
        V = Shape(g.ValueShape),
        Options = Options(g.Options),
        Pass = (P.JobPass)g.Pass,
        Layer = g.Layer is { } l ? new P.LayerShape { QueryIn = l.QueryIn, KeyIn = l.KeyIn, ValueIn = l.ValueIn, SeparateValues = l.SeparateValues, QueryBias = l.QueryBias, KeyBias = l.KeyBias, ValueBias = l.ValueBias } : null,
        Weights = g.Weights is { } w ? new P.WeightsWindow
        {
            Batch = w.Batch,
            HeadMean = w.Head is null,
            Head = w.Head ?? 0,
            RowLo = w.RowLo,
            RowHi = w.RowHi,
            ColLo = w.ColLo,
            ColHi = w.ColHi,
            CellRows = w.CellRows,
            CellCols = w.CellCols,
            Pooling = w.Pooling == WeightPooling.Max ? P.WeightPooling.PoolMax : P.WeightPooling.PoolMean,
        } : null,
        Mask = g.Mask is { } mask ? new P.MaskShape { Batch = mask.Batch, Heads = mask.Heads } : null,
    };

    private static AttentionGeometry Geometry(P.Geometry? g)
    {
        if (g?.Q is null || g.K is null || g.V is null || g.Options is null)
        {
            throw new WireFormatException("geometry without its three shapes and options");
        }

        if (!Enum.IsDefined(g.Pass))
        {
            throw new WireFormatException($"unknown job pass {(int)g.Pass}");
        }

        var layer = g.Layer is { } l ? new LayerShape(l.QueryIn, l.KeyIn, l.ValueIn, l.SeparateValues, l.QueryBias, l.KeyBias, l.ValueBias) : null;
        var geometry = AttentionGeometry.Create(Shape(g.Q), Shape(g.K), Shape(g.V), Options(g.Options)).WithMask(g.Mask is { } mask ? new MaskShape(mask.Batch, mask.Heads) : null);
        if ((g.Pass == P.JobPass.PassWeights) != (g.Weights is not null))
        {
            throw new WireFormatException(g.Weights is null ? "a weights pass without its window" : "a weights window for a job that is not a weights pass");
        }

        if (g.Weights is { } w)
        {
            if (!Enum.IsDefined(w.Pooling))
            {
                throw new WireFormatException($"unknown weight pooling {(int)w.Pooling}");
            }

            var window = new WeightsWindow(w.Batch, w.HeadMean ? null : w.Head, w.RowLo, w.RowHi, w.ColLo, w.ColHi, w.CellRows, w.CellCols, w.Pooling == P.WeightPooling.PoolMax ? WeightPooling.Max : WeightPooling.Mean);
            return layer is null ? geometry.ForWeights(window) : throw new WireFormatException("a weights pass with layer inputs");
        }

        return geometry.ForPass((JobPass)g.Pass).WithLayer(layer);
    }

    private static P.TensorShape Shape(TensorShape s) => new() { Name = s.Name, Batch = s.Batch, Heads = s.Heads, Seq = s.Seq, Dim = s.Dim };

    private static TensorShape Shape(P.TensorShape s) => new(s.Name.Length <= 64 ? s.Name : s.Name[..64], s.Batch, s.Heads, s.Seq, s.Dim);

    private static P.AttentionOptions Options(AttentionOptions o)
    {
        var p = new P.AttentionOptions
        {
            Score = (P.ScoreFunction)o.Score,
            Temperature = o.Temperature,
            Sigma = o.Sigma,
            Causal = o.Causal,
            Entropy = o.Entropy,
            Alignment = o.Alignment switch { DiagonalAlignment.TopLeft => P.Alignment.TopLeft, DiagonalAlignment.BottomRight => P.Alignment.BottomRight, _ => P.Alignment.Unset },
            Windowed = o.Window is not null,
            WindowLeft = o.Window?.Left ?? 0,
            WindowRight = o.Window?.Right ?? 0,
            Padded = o.KeyLengths is not null,
            BlockSize = o.BlockSize,
        };
        if (o.Scale is { } scale)
        {
            p.Scale = scale;
        }

        if (o.SoftCap is { } cap)
        {
            p.SoftCap = cap;
        }

        if (o.AlibiSlopes is { } slopes)
        {
            p.AlibiSlopes = Bytes(slopes);
        }

        if (o.Additive is { } additive)
        {
            p.AdditiveWq = Bytes(additive.Wq);
            p.AdditiveWk = Bytes(additive.Wk);
            p.AdditiveV = Bytes(additive.V);
        }

        if (o.KeyLengths is { } lengths)
        {
            p.KeyLengths.AddRange(lengths);
        }

        if (o.SequenceLengths is { } sequences)
        {
            p.Varlen = true;
            p.SequenceQueries.AddRange(sequences.Select(x => x.Query));
            p.SequenceKeys.AddRange(sequences.Select(x => x.Key));
        }

        return p;
    }

    private static AttentionOptions Options(P.AttentionOptions p)
    {
        if (!Enum.IsDefined(p.Score) || !Enum.IsDefined(p.Alignment))
        {
            throw new WireFormatException($"unknown score function {(int)p.Score} or alignment {(int)p.Alignment}");
        }

        if (p.SequenceQueries.Count != p.SequenceKeys.Count)
        {
            throw new WireFormatException($"{p.SequenceQueries.Count} sequence query lengths for {p.SequenceKeys.Count} key lengths");
        }

        return new AttentionOptions
        {
            Score = (ScoreFunction)p.Score,
            Scale = p.HasScale ? p.Scale : null,
            Temperature = p.Temperature,
            Sigma = p.Sigma,
            SoftCap = p.HasSoftCap ? p.SoftCap : null,
            AlibiSlopes = p.HasAlibiSlopes ? Floats(p.AlibiSlopes, "alibi_slopes") : null,
            Additive = p.HasAdditiveWq ? new AdditiveParameters(Floats(p.AdditiveWq, "additive_wq"), Floats(p.AdditiveWk, "additive_wk"), Floats(p.AdditiveV, "additive_v")) : null,
            Causal = p.Causal,
            Entropy = p.Entropy,
            Alignment = p.Alignment switch { P.Alignment.TopLeft => DiagonalAlignment.TopLeft, P.Alignment.BottomRight => DiagonalAlignment.BottomRight, _ => null },
            Window = p.Windowed ? (p.WindowLeft, p.WindowRight) : null,
            KeyLengths = p.Padded ? [.. p.KeyLengths] : null,
            SequenceLengths = p.Varlen ? [.. p.SequenceQueries.Zip(p.SequenceKeys, (q, k) => new SequenceLength(q, k))] : null,
            BlockSize = p.BlockSize,
        };
    }

    private static P.Shard Shard(Shard s) => new() { Id = s.Id, Batch = s.Batch, Head = s.Head, RowStart = s.RowStart, RowCount = s.RowCount, BlockStart = s.BlockStart, BlockEnd = s.BlockEnd, Pairs = s.Pairs, Flops = s.Flops, Bytes = s.Bytes };

    private static Shard Shard(P.Shard s) => new(s.Id, s.Batch, s.Head, s.RowStart, s.RowCount, s.BlockStart, s.BlockEnd, s.Pairs, s.Flops, s.Bytes);

    private static TensorChunk Chunk(P.TensorChunk c)
    {
        if (!Enum.IsDefined(c.Tensor) || c.Offset < 0)
        {
            throw new WireFormatException($"chunk of tensor {(int)c.Tensor} at offset {c.Offset}");
        }

        return new TensorChunk(Job(c.Job), (TensorRole)c.Tensor, c.Offset, Floats(c.Data, "data"), c.Last);
    }

    private ExpectShards Expect(P.ExpectShards m)
    {
        var g = Geometry(m.Geometry);
        var blocks = g.Mask is null
            ? (m.MaskBlocks.IsEmpty ? null : throw new WireFormatException("mask blocks for a job without an explicit mask"))
            : (m.MaskBlocks.IsEmpty ? null : MaskBlocks.FromBits(g, m.MaskBlocks.ToByteArray()));
        return new ExpectShards(Job(m.Job), g, m.Shards.Select(Shard).ToList(), Ref(m.Client, "client"), Ref(m.Coordinator, "coordinator"), [.. m.Audited], blocks);
    }

    private static P.ComputeShard Compute(ComputeShard m)
    {
        var input = m.Input;
        return new P.ComputeShard
        {
            Job = m.Job.Value,
            Shard = Shard(m.Shard),
            Attempt = m.Attempt,
            Geometry = Geometry(input.Geometry),
            Q = Bytes(input.Q.Span),
            K = Bytes(input.K.Span),
            V = Bytes(input.V.Span),
            Lse = Bytes(input.Lse.Span),
            Mask = Bytes(input.CompactMask().Span),
            Layer = input.Layer is { } rows ? new P.LayerRows
            {
                X = Bytes(rows.X.Span),
                KeyInput = Bytes(rows.KeyIn.Span),
                ValueInput = Bytes(rows.ValueIn.Span),
                Wq = Bytes(rows.Wq.Span),
                Bq = Bytes(rows.Bq.Span),
                Wk = Bytes(rows.Wk.Span),
                Bk = Bytes(rows.Bk.Span),
                Wv = Bytes(rows.Wv.Span),
                Bv = Bytes(rows.Bv.Span),
            } : null,
            Reducer = Address(AddressOf(m.Reducer)),
            Coordinator = Address(AddressOf(m.Coordinator)),
        };
    }

    private ComputeShard Compute(P.ComputeShard m)
    {
        if (m.Shard is null)
        {
            throw new WireFormatException("no shard");
        }

        var shard = Shard(m.Shard);
        var g = Geometry(m.Geometry);
        if (shard.Batch < 0 || shard.Batch >= g.Batch || shard.Head < 0 || shard.Head >= g.Heads
            || shard.RowStart < 0 || shard.RowCount < 0 || (long)shard.RowStart + shard.RowCount > g.QuerySeq
            || shard.BlockStart < 0 || shard.BlockEnd < shard.BlockStart || shard.BlockEnd > g.BlockCount)
        {
            throw new WireFormatException($"{shard} lies outside the job's geometry Q{g.QueryShape}, {g.BlockCount} key blocks");
        }

        long keys = g.KeysIn(shard.BlockStart, shard.BlockEnd);
        bool coverage = g.Pass == JobPass.Coverage;
        if ((g.Layer is null) != (m.Layer is null))
        {
            throw new WireFormatException(g.Layer is null ? "layer inputs for a job that is not a layer job" : "a layer job's shard without its layer inputs");
        }

        if (g.Weights is { } window)
        {
            // Counts here; the cells' place and every value where the worker builds the heads' problems.
            var cells = window.CellsOf(g, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
            long heads = window.HeadCount(g), kvHeads = window.KvHeads(g).Count, dataKeys = g.KeysIn(shard.BlockStart, cells.DataBlockEnd);
            var weightsInput = new ShardInput(
                g, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd,
                Floats(m.Q, "q", heads * shard.RowCount * g.KeyDim),
                Floats(m.K, "k", kvHeads * dataKeys * g.KeyDim),
                Floats(m.V, "v", 0),
                Floats(m.Lse, "lse", heads * shard.RowCount))
            {
                Mask = Floats(m.Mask, "mask", g.Mask is { } mask ? (mask.Heads == 1 ? 1 : heads) * shard.RowCount * dataKeys : 0),
            };
            return new ComputeShard(Job(m.Job), shard, m.Attempt, weightsInput, Ref(m.Reducer, "reducer"), Ref(m.Coordinator, "coordinator"));
        }

        long rows = g.Layer is null ? shard.RowCount : 0, keyRows = g.Layer is null ? keys : 0;
        var input = new ShardInput(
            g, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd,
            Floats(m.Q, "q", rows * g.KeyDim),
            Floats(m.K, "k", keyRows * g.KeyDim),
            Floats(m.V, "v", coverage ? 0 : keyRows * g.ValueDim),
            Floats(m.Lse, "lse", coverage ? shard.RowCount : 0))
        {
            Mask = Floats(m.Mask, "mask", g.Mask is null ? 0 : shard.RowCount * keys),
        };
        if (g.Layer is { } l && m.Layer is { } p)
        {
            // Counts are checked here; values (finite) where the worker projects them.
            input = input with
            {
                Layer = new LayerRows(
                    Floats(p.X, "layer.x", (long)shard.RowCount * l.QueryIn),
                    Floats(p.KeyInput, "layer.key_input", keys * l.KeyIn),
                    Floats(p.ValueInput, "layer.value_input", l.SeparateValues ? keys * l.ValueIn : 0),
                    Floats(p.Wq, "layer.wq", (long)g.KeyDim * l.QueryIn),
                    Floats(p.Bq, "layer.bq", l.QueryBias ? g.KeyDim : 0),
                    Floats(p.Wk, "layer.wk", (long)g.KeyDim * l.KeyIn),
                    Floats(p.Bk, "layer.bk", l.KeyBias ? g.KeyDim : 0),
                    Floats(p.Wv, "layer.wv", (long)g.ValueDim * l.ValueIn),
                    Floats(p.Bv, "layer.bv", l.ValueBias ? g.ValueDim : 0)),
            };
        }
        return new ComputeShard(Job(m.Job), shard, m.Attempt, input, Ref(m.Reducer, "reducer"), Ref(m.Coordinator, "coordinator"));
    }

    private static P.PartialComputed Partial(PartialComputed m)
    {
        var p = m.Partials;
        var wire = new P.PartialComputed { Job = m.Job.Value, ShardId = m.ShardId, Attempt = m.Attempt, Rows = p.Rows, ValueDim = p.ValueDim, M = Bytes(p.M), L = Bytes(p.L), O = Bytes(p.O) };
        wire.NodeLevels.AddRange(p.Nodes.Select(n => n.Level));
        wire.NodeIndices.AddRange(p.Nodes.Select(n => n.Index));
        return wire;
    }

    private static PartialComputed Partial(P.PartialComputed m)
    {
        if (m.Rows < 0 || m.ValueDim < 1)
        {
            throw new WireFormatException($"{m.Rows} rows, value dim {m.ValueDim}");
        }

        var nodes = Nodes(m.NodeLevels, m.NodeIndices);

        long cells = (long)nodes.Length * m.Rows;
        var partials = new PartialSet(nodes, m.Rows, m.ValueDim, Floats(m.M, "m", cells), Floats(m.L, "l", cells), Floats(m.O, "o", cells * m.ValueDim));
        return new PartialComputed(Job(m.Job), m.ShardId, m.Attempt, partials);
    }

    private static CoverageComputed Coverage(P.CoverageComputed m)
    {
        var nodes = Nodes(m.NodeLevels, m.NodeIndices);
        if (m.Keys < 0)
        {
            throw new WireFormatException($"{m.Keys} keys");
        }

        return new CoverageComputed(Job(m.Job), m.ShardId, m.Attempt, new CoverageParts(nodes, m.Keys, Floats(m.Values, "values", (long)nodes.Length * m.Keys)));
    }

    private static WeightsComputed Weights(P.WeightsComputed m)
    {
        var range = new WeightsCellRange(m.CellRowStart, m.CellRowEnd, m.CellColStart, m.CellColEnd, m.DataBlockEnd);
        if (m.CellRowEnd < m.CellRowStart || m.CellColEnd < m.CellColStart)
        {
            throw new WireFormatException($"cells [{m.CellRowStart}, {m.CellRowEnd}) × [{m.CellColStart}, {m.CellColEnd}) are not ranges");
        }

        return new WeightsComputed(Job(m.Job), m.ShardId, m.Attempt, new WeightsCells(range, Floats(m.Values, "values", range.Count)));
    }

    private static WeightsFinished WeightsBand(P.WeightsFinished m)
    {
        if (m.CellRowCount < 0 || m.CellColCount < 0)
        {
            throw new WireFormatException($"{m.CellRowCount} × {m.CellColCount} cells");
        }

        return new WeightsFinished(Job(m.Job), m.CellRowStart, m.CellRowCount, m.CellColStart, m.CellColCount, Floats(m.Values, "values", (long)m.CellRowCount * m.CellColCount));
    }

    private static TreeNode[] Nodes(Google.Protobuf.Collections.RepeatedField<int> levels, Google.Protobuf.Collections.RepeatedField<int> indices)
    {
        if (levels.Count != indices.Count)
        {
            throw new WireFormatException($"{levels.Count} node levels for {indices.Count} node indices");
        }

        var nodes = new TreeNode[levels.Count];
        for (int i = 0; i < nodes.Length; i++)
        {
            if (levels[i] is < 0 or > 31 || indices[i] < 0)
            {
                throw new WireFormatException($"tree node {i} has level {levels[i]}, index {indices[i]}");
            }

            nodes[i] = new TreeNode(levels[i], indices[i]);
        }

        return nodes;
    }

    private static RowsFinished Rows(P.RowsFinished m)
    {
        if (m.RowCount < 0)
        {
            throw new WireFormatException($"{m.RowCount} rows");
        }

        var lse = Floats(m.Lse, "lse", m.RowCount);
        var output = Floats(m.Output, "output");
        if (m.RowCount == 0 ? output.Length != 0 : output.Length % m.RowCount != 0)
        {
            throw new WireFormatException($"{output.Length} output values do not split into {m.RowCount} rows");
        }

        var entropy = m.HasEntropy ? Floats(m.Entropy, "entropy", m.RowCount) : null;
        return new RowsFinished(Job(m.Job), m.Batch, m.Head, m.RowStart, m.RowCount, output, lse, entropy);
    }

    private static NodeHeartbeat Heartbeat(P.Heartbeat h)
    {
        if (h.Node.Length is 0 or > 200)
        {
            throw new WireFormatException($"heartbeat node name of {h.Node.Length} characters");
        }

        return new NodeHeartbeat(h.Node, [.. h.Roles], h.Host, h.ProcessId, h.Simd, h.Threads, h.StartedUnixMs, h.SentUnixMs, h.ShardsDone, h.InFlight, h.Leaving, [.. h.EndedJobs]);
    }
}

/// <summary>A reference that stands for an actor on some node of the cluster.</summary>
internal interface IRemoteAddressable
{
    ActorAddress Address { get; }
}

/// <summary>A message that cannot be decoded or fails its checks; the text names the message and the fault.</summary>
public sealed class WireFormatException(string message) : Exception(message);
