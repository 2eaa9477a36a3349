using System.Buffers;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using MessagePack;

namespace AttentionActors.Pipeline.Wire;

/// <summary>The two messages that describe work: a shard with its data, and a job's plan for the reducer.</summary>
public sealed partial class WireCodec
{
    private static void WriteCompute(WireCodec codec, ref MessagePackWriter w, ComputeShard m)
    {
        WriteJob(ref w, m.Job);
        w.Write(m.Attempt);
        WriteGeometry(ref w, m.Geometry);
        WriteShard(ref w, m.Shard);
        if (m.Input is { } input)
        {
            WriteShardData(ref w, input);
        }
        else
        {
            w.WriteNil();
        }

        WriteDataRef(ref w, m.Store);
        w.Write(m.Grant);
        WriteRef(ref w, m.Reducer);
        w.Write(m.ResultsTo);
        WriteRef(ref w, m.Coordinator);
        w.Write(m.Avoid);
        w.Write(m.Home);
    }

    private static void WriteShardData(ref MessagePackWriter w, ShardInput input)
    {
        // A shard of a step against a key/value cache travels as the rows of its blocks, as a shard of tensors does.
        input = input.WithCacheRows();
        w.WriteArrayHeader(6);
        WriteFloats(ref w, input.Q.Span);
        WriteFloats(ref w, input.K.Span);
        WriteFloats(ref w, input.V.Span);
        WriteFloats(ref w, input.Lse.Span);
        WriteFloats(ref w, input.CompactMask().Span);
        if (input.Layer is { } rows)
        {
            w.WriteArrayHeader(9);
            foreach (var part in new[] { rows.X, rows.KeyIn, rows.ValueIn, rows.Wq, rows.Bq, rows.Wk, rows.Bk, rows.Wv, rows.Bv })
            {
                WriteFloats(ref w, part.Span);
            }
        }
        else
        {
            w.WriteNil();
        }
    }

    /// <summary>Writes a shard's data as a store sends it to a worker: the tensors of <paramref name="input"/>, no geometry (the worker has it).</summary>
    public static void EncodeShardData(IBufferWriter<byte> output, ShardInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var writer = new MessagePackWriter(output);
        WriteShardData(ref writer, input);
        writer.Flush();
    }

    /// <summary>Reads a shard's data sent by a store, checking every count against <paramref name="g"/> and <paramref name="shard"/>.</summary>
    public static ShardInput DecodeShardData(ReadOnlySequence<byte> payload, AttentionGeometry g, Shard shard)
    {
        var reader = new MessagePackReader(payload);
        try
        {
            var input = ReadShardData(ref reader, g, shard);
            return reader.End ? input : throw new WireFormatException($"{payload.Length - reader.Consumed} bytes after the shard's data");
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or AttentionInputException or ArgumentException or OverflowException or InvalidOperationException)
        {
            throw new WireFormatException($"the data of {shard} ({payload.Length} bytes) is malformed: {ex.Message}");
        }
    }

    /// <summary>The data of one shard: every tensor of <paramref name="shard"/>'s input, each count checked against the geometry and the shard's place.</summary>
    private static ShardInput ReadShardData(ref MessagePackReader r, AttentionGeometry g, Shard shard)
    {
        Fields(ref r, 6, "shard data");
        long keys = g.KeysIn(shard.BlockStart, shard.BlockEnd);
        ShardInput input;
        if (g.Weights is { } window)
        {
            // A weights shard carries the rows of every head in use and the keys up to its last cell's end.
            var cells = window.CellsOf(g, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
            long heads = window.HeadCount(g), kvHeads = window.KvHeads(g).Count, dataKeys = g.KeysIn(shard.BlockStart, cells.DataBlockEnd);
            input = new ShardInput(
                g, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd,
                ReadFloats(ref r, "q", heads * shard.RowCount * g.KeyDim),
                ReadFloats(ref r, "k", kvHeads * dataKeys * g.KeyDim),
                ReadFloats(ref r, "v", 0),
                ReadFloats(ref r, "lse", heads * shard.RowCount))
            {
                Mask = ReadFloats(ref r, "mask", g.Mask is { } mask ? (mask.Heads == 1 ? 1 : heads) * shard.RowCount * dataKeys : 0),
            };
        }
        else
        {
            bool coverage = g.Pass == JobPass.Coverage;
            long rows = g.Layer is null ? shard.RowCount : 0, keyRows = g.Layer is null ? keys : 0;
            input = new ShardInput(
                g, shard.Batch, shard.Head, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd,
                ReadFloats(ref r, "q", rows * g.KeyDim),
                ReadFloats(ref r, "k", keyRows * g.KeyDim),
                ReadFloats(ref r, "v", coverage ? 0 : keyRows * g.ValueDim),
                ReadFloats(ref r, "lse", coverage ? shard.RowCount : 0))
            {
                Mask = ReadFloats(ref r, "mask", g.Mask is null ? 0 : shard.RowCount * keys),
            };
        }

        if (r.TryReadNil())
        {
            if (g.Layer is not null)
            {
                throw new WireFormatException("a layer job's shard without its layer inputs");
            }
        }
        else
        {
            var l = g.Layer ?? throw new WireFormatException("layer inputs for a job that is not a layer job");
            Fields(ref r, 9, "layer rows");
            input = input with
            {
                Layer = new LayerRows(
                    ReadFloats(ref r, "layer x", (long)shard.RowCount * l.QueryIn),
                    ReadFloats(ref r, "layer key input", keys * l.KeyIn),
                    ReadFloats(ref r, "layer value input", l.SeparateValues ? keys * l.ValueIn : 0),
                    ReadFloats(ref r, "layer W_q", (long)g.KeyDim * l.QueryIn),
                    ReadFloats(ref r, "layer b_q", l.QueryBias ? g.KeyDim : 0),
                    ReadFloats(ref r, "layer W_k", (long)g.KeyDim * l.KeyIn),
                    ReadFloats(ref r, "layer b_k", l.KeyBias ? g.KeyDim : 0),
                    ReadFloats(ref r, "layer W_v", (long)g.ValueDim * l.ValueIn),
                    ReadFloats(ref r, "layer b_v", l.ValueBias ? g.ValueDim : 0)),
            };
        }

        return input;
    }

    private static ComputeShard ReadCompute(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        int attempt = Attempt(ref r);
        var g = ReadGeometry(ref r);
        var shard = ReadShard(ref r, g);
        var input = r.TryReadNil() ? null : ReadShardData(ref r, g, shard);
        var store = ReadDataRef(ref r, "store");
        var grant = Grant(ref r);
        var reducer = codec.ReadRef(ref r, "reducer");
        string resultsTo = Text(ref r, "results endpoint");
        var coordinator = codec.ReadRef(ref r, "coordinator");
        return new ComputeShard(job, shard, attempt, g, input, store, grant, reducer, resultsTo, coordinator, Text(ref r, "avoid"), Text(ref r, "home"));
    }

    private static void WriteExpect(WireCodec codec, ref MessagePackWriter w, ExpectShards m)
    {
        WriteJob(ref w, m.Job);
        WriteGeometry(ref w, m.Geometry);
        w.WriteArrayHeader(m.Shards.Count);
        foreach (var shard in m.Shards)
        {
            WriteShard(ref w, shard);
        }

        WriteRef(ref w, m.Client);
        WriteRef(ref w, m.Coordinator);
        WriteInts(ref w, m.Audited);
        if (m.MaskBlocks is { } blocks)
        {
            w.Write(blocks.Bits);
        }
        else
        {
            w.WriteNil();
        }

        w.Write(m.Key);
        WriteDataRef(ref w, m.ClientInbox);
    }

    /// <summary>A job's plan: shards inside the geometry with unique ids, audited ids among them, and a mask block map of the geometry's size.</summary>
    private static ExpectShards ReadExpect(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        var g = ReadGeometry(ref r);
        int count = Count(ref r, r.ReadArrayHeader(), "shards");
        var shards = new List<Shard>(Math.Min(count, 1 << 16));
        var ids = new HashSet<int>();
        for (int i = 0; i < count; i++)
        {
            var shard = ReadShard(ref r, g);
            if (!ids.Add(shard.Id))
            {
                throw new WireFormatException($"shard id {shard.Id} is listed twice");
            }

            shards.Add(shard);
        }

        if (count > PlanOptions.ShardsCeiling)
        {
            throw new WireFormatException($"{count} shards, more than a plan may hold ({PlanOptions.ShardsCeiling})");
        }

        var client = codec.ReadRef(ref r, "client");
        var coordinator = codec.ReadRef(ref r, "coordinator");
        var audited = ReadInts(ref r, "audited shards");
        if (audited.FirstOrDefault(id => !ids.Contains(id), -1) is >= 0 and var unknown)
        {
            throw new WireFormatException($"audited shard {unknown} is not in the plan");
        }

        MaskBlocks? blocks = null;
        if (!r.TryReadNil())
        {
            var bits = r.ReadBytes() ?? throw new WireFormatException("mask blocks are nil");
            blocks = g.Mask is null ? throw new WireFormatException("mask blocks for a job without an explicit mask") : MaskBlocks.FromBits(g, bits.ToArray());
        }

        var key = Grant(ref r);
        return new ExpectShards(job, g, shards, client, coordinator, audited, blocks, key, ReadDataRef(ref r, "client inbox"));
    }
}
