using System.Buffers;
using System.Runtime.InteropServices;
using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;
using MessagePack;

namespace AttentionActors.Pipeline.Wire;

/// <summary>The fields every message is made of, each written one way and read back with its checks.</summary>
public sealed partial class WireCodec
{
    internal static void WriteJob(ref MessagePackWriter writer, JobId job) => writer.Write(job.Value);

    internal static JobId Job(ref MessagePackReader reader)
    {
        string? value = reader.ReadString();
        return value is { Length: > 0 and <= 64 } ? new JobId(value) : throw new WireFormatException($"job id of {value?.Length ?? 0} characters (1 to 64 allowed)");
    }

    internal static int Attempt(ref MessagePackReader reader)
    {
        int attempt = reader.ReadInt32();
        return attempt >= 1 ? attempt : throw new WireFormatException($"attempt {attempt}");
    }

    /// <summary>A grant or a key: a <c>bin</c> of at most 64 bytes (its length is checked where it is used).</summary>
    internal static byte[] Grant(ref MessagePackReader reader)
    {
        var bytes = reader.ReadBytes() ?? throw new WireFormatException("grant is nil");
        return bytes.Length <= 64 ? bytes.ToArray() : throw new WireFormatException($"grant of {bytes.Length} bytes");
    }

    internal static void WriteJobs(ref MessagePackWriter writer, IReadOnlyList<JobId> jobs)
    {
        writer.WriteArrayHeader(jobs.Count);
        foreach (var job in jobs)
        {
            WriteJob(ref writer, job);
        }
    }

    internal static JobId[] ReadJobs(ref MessagePackReader reader)
    {
        var jobs = new JobId[Count(ref reader, reader.ReadArrayHeader(), "jobs")];
        for (int i = 0; i < jobs.Length; i++)
        {
            jobs[i] = Job(ref reader);
        }

        return jobs;
    }

    internal static void WriteDataRef(ref MessagePackWriter writer, DataRef? place)
    {
        if (place is null)
        {
            writer.WriteNil();
            return;
        }

        writer.WriteArrayHeader(2);
        writer.Write(place.Endpoint);
        writer.Write(place.Key);
    }

    internal static DataRef? ReadDataRef(ref MessagePackReader reader, string field)
    {
        if (reader.TryReadNil())
        {
            return null;
        }

        Fields(ref reader, 2, field);
        string endpoint = Text(ref reader, $"{field} endpoint");
        return endpoint.Length is > 0 and <= 300 ? new DataRef(endpoint, Grant(ref reader)) : throw new WireFormatException($"{field} endpoint of {endpoint.Length} characters");
    }

    internal static string Text(ref MessagePackReader reader, string field)
    {
        string? value = reader.ReadString();
        return value is null ? "" : value.Length <= MaxText ? value : throw new WireFormatException($"{field} of {value.Length} characters (at most {MaxText})");
    }

    internal static long NonNegative(long value, string field) => value >= 0 ? value : throw new WireFormatException($"{field} is {value}");

    internal static int NonNegative(int value, string field) => value >= 0 ? value : throw new WireFormatException($"{field} is {value}");

    internal static void WriteRef(ref MessagePackWriter writer, IActorRef? actor)
    {
        if (actor is null || actor.IsNobody())
        {
            writer.WriteNil();
            return;
        }

        writer.Write(Akka.Serialization.Serialization.SerializedActorPath(actor));
    }

    internal IActorRef ReadRef(ref MessagePackReader reader, string field)
    {
        if (reader.TryReadNil())
        {
            throw new WireFormatException($"no {field} actor");
        }

        string? path = reader.ReadString();
        if (path is null or { Length: 0 or > 1024 } || system is null)
        {
            throw new WireFormatException($"{field} actor path of {path?.Length ?? 0} characters");
        }

        return system.Provider.ResolveActorRef(path);
    }

    /// <summary>The remaining bytes: no element count read from the payload may exceed it (each element takes at least one byte).</summary>
    internal static int Count(ref MessagePackReader reader, int count, string field)
        => count <= reader.Sequence.Length - reader.Consumed ? count : throw new WireFormatException($"{field} claims {count} elements in {reader.Sequence.Length - reader.Consumed} bytes");

    internal static void WriteFloats(ref MessagePackWriter writer, ReadOnlySpan<float> values) => writer.Write(MemoryMarshal.AsBytes(values));

    /// <summary>A <c>bin</c> of float32 values, which must hold exactly <paramref name="expected"/> of them when given.</summary>
    internal static float[] ReadFloats(ref MessagePackReader reader, string field, long? expected = null)
    {
        var bytes = reader.ReadBytes() ?? throw new WireFormatException($"{field} is nil");
        if (bytes.Length % sizeof(float) != 0)
        {
            throw new WireFormatException($"{field} holds {bytes.Length} bytes, not a whole number of float32 values");
        }

        long count = bytes.Length / sizeof(float);
        if (expected is { } n && n != count)
        {
            throw new WireFormatException($"{field} holds {count} float32 values; its shape needs {n}");
        }

        var values = new float[count];
        bytes.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    internal static float[]? ReadOptionalFloats(ref MessagePackReader reader, string field) => reader.TryReadNil() ? null : ReadFloats(ref reader, field);

    internal static void WriteInts(ref MessagePackWriter writer, IReadOnlyList<int> values)
    {
        writer.WriteArrayHeader(values.Count);
        foreach (int value in values)
        {
            writer.Write(value);
        }
    }

    internal static int[] ReadInts(ref MessagePackReader reader, string field)
    {
        var values = new int[Count(ref reader, reader.ReadArrayHeader(), field)];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = reader.ReadInt32();
        }

        return values;
    }

    internal static void WriteShape(ref MessagePackWriter writer, TensorShape s)
    {
        writer.WriteArrayHeader(5);
        writer.Write(s.Name);
        writer.Write(s.Batch);
        writer.Write(s.Heads);
        writer.Write(s.Seq);
        writer.Write(s.Dim);
    }

    internal static TensorShape ReadShape(ref MessagePackReader reader)
    {
        Fields(ref reader, 5, "tensor shape");
        string name = Text(ref reader, "tensor name");
        return new TensorShape(name.Length <= 64 ? name : name[..64], reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32());
    }

    internal static void Fields(ref MessagePackReader reader, int expected, string what)
    {
        int count = reader.ReadArrayHeader();
        if (count != expected)
        {
            throw new WireFormatException($"{what} has {count} fields, not {expected}");
        }
    }

    internal static void WriteGeometry(ref MessagePackWriter writer, AttentionGeometry g)
    {
        writer.WriteArrayHeader(9);
        WriteShape(ref writer, g.QueryShape);
        WriteShape(ref writer, g.KeyShape);
        WriteShape(ref writer, g.ValueShape);
        WriteOptions(ref writer, g.Options);
        writer.Write((int)g.Pass);
        if (g.Layer is { } l)
        {
            writer.WriteArrayHeader(7);
            writer.Write(l.QueryIn);
            writer.Write(l.KeyIn);
            writer.Write(l.ValueIn);
            writer.Write(l.SeparateValues);
            writer.Write(l.QueryBias);
            writer.Write(l.KeyBias);
            writer.Write(l.ValueBias);
        }
        else
        {
            writer.WriteNil();
        }

        if (g.Weights is { } w)
        {
            writer.WriteArrayHeader(9);
            writer.Write(w.Batch);
            if (w.Head is { } head)
            {
                writer.Write(head);
            }
            else
            {
                writer.WriteNil();
            }

            writer.Write(w.RowLo);
            writer.Write(w.RowHi);
            writer.Write(w.ColLo);
            writer.Write(w.ColHi);
            writer.Write(w.CellRows);
            writer.Write(w.CellCols);
            writer.Write((int)w.Pooling);
        }
        else
        {
            writer.WriteNil();
        }

        if (g.Mask is { } mask)
        {
            writer.WriteArrayHeader(2);
            writer.Write(mask.Batch);
            writer.Write(mask.Heads);
        }
        else
        {
            writer.WriteNil();
        }

        writer.Write(g.RowPeriod);
    }

    /// <summary>A geometry, built and so checked by <see cref="AttentionGeometry.Create"/> and its pass, layer, window and mask methods.</summary>
    internal static AttentionGeometry ReadGeometry(ref MessagePackReader reader)
    {
        MessagePackSecurity.UntrustedData.DepthStep(ref reader);
        Fields(ref reader, 9, "geometry");
        var q = ReadShape(ref reader);
        var k = ReadShape(ref reader);
        var v = ReadShape(ref reader);
        var options = ReadOptions(ref reader);
        int pass = reader.ReadInt32();
        if (!Enum.IsDefined((JobPass)pass))
        {
            throw new WireFormatException($"unknown job pass {pass}");
        }

        LayerShape? layer = null;
        if (!reader.TryReadNil())
        {
            Fields(ref reader, 7, "layer shape");
            layer = new LayerShape(reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadBoolean(), reader.ReadBoolean(), reader.ReadBoolean(), reader.ReadBoolean());
        }

        WeightsWindow? window = null;
        if (!reader.TryReadNil())
        {
            Fields(ref reader, 9, "weights window");
            int batch = reader.ReadInt32();
            int? head = reader.TryReadNil() ? null : reader.ReadInt32();
            int rowLo = reader.ReadInt32(), rowHi = reader.ReadInt32(), colLo = reader.ReadInt32(), colHi = reader.ReadInt32(), cellRows = reader.ReadInt32(), cellCols = reader.ReadInt32(), pooling = reader.ReadInt32();
            if (!Enum.IsDefined((WeightPooling)pooling))
            {
                throw new WireFormatException($"unknown weight pooling {pooling}");
            }

            window = new WeightsWindow(batch, head, rowLo, rowHi, colLo, colHi, cellRows, cellCols, (WeightPooling)pooling);
        }

        MaskShape? mask = null;
        if (!reader.TryReadNil())
        {
            Fields(ref reader, 2, "mask shape");
            mask = new MaskShape(reader.ReadInt32(), reader.ReadInt32());
        }

        int rowPeriod = reader.ReadInt32();
        reader.Depth--;
        var geometry = AttentionGeometry.Create(q, k, v, options).WithMask(mask);
        if (((JobPass)pass == JobPass.Weights) != (window is not null))
        {
            throw new WireFormatException(window is null ? "a weights pass without its window" : "a weights window for a job that is not a weights pass");
        }

        if (window is not null)
        {
            return layer is null ? geometry.ForWeights(window) : throw new WireFormatException("a weights pass with layer inputs");
        }

        // Rows in periods (stacked query heads) last: WithRowPeriod refuses what does not fit them.
        return geometry.ForPass((JobPass)pass).WithLayer(layer).WithRowPeriod(rowPeriod);
    }

    internal static void WriteOptions(ref MessagePackWriter writer, AttentionOptions o)
    {
        writer.WriteArrayHeader(14);
        writer.Write((int)o.Score);
        WriteOptional(ref writer, o.Scale);
        writer.Write(o.Temperature);
        writer.Write(o.Sigma);
        WriteOptional(ref writer, o.SoftCap);
        if (o.AlibiSlopes is { } slopes)
        {
            WriteFloats(ref writer, slopes);
        }
        else
        {
            writer.WriteNil();
        }

        if (o.Additive is { } additive)
        {
            writer.WriteArrayHeader(3);
            WriteFloats(ref writer, additive.Wq);
            WriteFloats(ref writer, additive.Wk);
            WriteFloats(ref writer, additive.V);
        }
        else
        {
            writer.WriteNil();
        }

        writer.Write(o.Causal);
        writer.Write(o.Entropy);
        if (o.Alignment is { } alignment)
        {
            writer.Write((int)alignment);
        }
        else
        {
            writer.WriteNil();
        }

        if (o.Window is { } window)
        {
            writer.WriteArrayHeader(2);
            writer.Write(window.Left);
            writer.Write(window.Right);
        }
        else
        {
            writer.WriteNil();
        }

        if (o.KeyLengths is { } lengths)
        {
            WriteInts(ref writer, lengths);
        }
        else
        {
            writer.WriteNil();
        }

        if (o.SequenceLengths is { } sequences)
        {
            WriteInts(ref writer, [.. sequences.SelectMany(s => new[] { s.Query, s.Key })]);
        }
        else
        {
            writer.WriteNil();
        }

        writer.Write(o.BlockSize);
    }

    internal static void WriteOptional(ref MessagePackWriter writer, float? value)
    {
        if (value is { } x)
        {
            writer.Write(x);
        }
        else
        {
            writer.WriteNil();
        }
    }

    internal static float? ReadOptionalSingle(ref MessagePackReader reader) => reader.TryReadNil() ? null : reader.ReadSingle();

    internal static AttentionOptions ReadOptions(ref MessagePackReader reader)
    {
        Fields(ref reader, 14, "options");
        int score = reader.ReadInt32();
        float? scale = ReadOptionalSingle(ref reader);
        float temperature = reader.ReadSingle(), sigma = reader.ReadSingle();
        float? softCap = ReadOptionalSingle(ref reader);
        var slopes = ReadOptionalFloats(ref reader, "alibi slopes");
        AdditiveParameters? additive = null;
        if (!reader.TryReadNil())
        {
            Fields(ref reader, 3, "additive parameters");
            additive = new AdditiveParameters(ReadFloats(ref reader, "additive W_q"), ReadFloats(ref reader, "additive W_k"), ReadFloats(ref reader, "additive v"));
        }

        bool causal = reader.ReadBoolean(), entropy = reader.ReadBoolean();
        int? alignment = reader.TryReadNil() ? null : reader.ReadInt32();
        if (alignment is { } a && !Enum.IsDefined((DiagonalAlignment)a))
        {
            throw new WireFormatException($"unknown alignment {a}");
        }

        (int, int)? window = null;
        if (!reader.TryReadNil())
        {
            Fields(ref reader, 2, "window");
            window = (reader.ReadInt32(), reader.ReadInt32());
        }

        int[]? keyLengths = reader.TryReadNil() ? null : ReadInts(ref reader, "key lengths");
        SequenceLength[]? sequences = null;
        if (!reader.TryReadNil())
        {
            var pairs = ReadInts(ref reader, "sequence lengths");
            if (pairs.Length % 2 != 0)
            {
                throw new WireFormatException($"{pairs.Length} sequence length values are not query and key pairs");
            }

            sequences = [.. Enumerable.Range(0, pairs.Length / 2).Select(i => new SequenceLength(pairs[2 * i], pairs[(2 * i) + 1]))];
        }

        if (!Enum.IsDefined((ScoreFunction)score))
        {
            throw new WireFormatException($"unknown score function {score}");
        }

        return new AttentionOptions
        {
            Score = (ScoreFunction)score,
            Scale = scale,
            Temperature = temperature,
            Sigma = sigma,
            SoftCap = softCap,
            AlibiSlopes = slopes,
            Additive = additive,
            Causal = causal,
            Entropy = entropy,
            Alignment = (DiagonalAlignment?)alignment,
            Window = window,
            KeyLengths = keyLengths,
            SequenceLengths = sequences,
            BlockSize = reader.ReadInt32(),
        };
    }

    internal static void WriteShard(ref MessagePackWriter writer, Shard s)
    {
        writer.WriteArrayHeader(10);
        writer.Write(s.Id);
        writer.Write(s.Batch);
        writer.Write(s.Head);
        writer.Write(s.RowStart);
        writer.Write(s.RowCount);
        writer.Write(s.BlockStart);
        writer.Write(s.BlockEnd);
        writer.Write(s.Pairs);
        writer.Write(s.Flops);
        writer.Write(s.Bytes);
    }

    /// <summary>A shard, which must lie inside <paramref name="g"/>: its batch, head, rows and key blocks.</summary>
    internal static Shard ReadShard(ref MessagePackReader reader, AttentionGeometry g)
    {
        Fields(ref reader, 10, "shard");
        var s = new Shard(reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt64(), reader.ReadDouble(), reader.ReadInt64());
        if (s.Id < 0 || s.Batch < 0 || s.Batch >= g.Batch || s.Head < 0 || s.Head >= g.Heads
            || s.RowStart < 0 || s.RowCount < 0 || (long)s.RowStart + s.RowCount > g.QuerySeq
            || s.BlockStart < 0 || s.BlockEnd < s.BlockStart || s.BlockEnd > g.BlockCount
            || s.Pairs < 0 || !(s.Flops >= 0) || double.IsInfinity(s.Flops) || s.Bytes < 0)
        {
            throw new WireFormatException($"{s} (pairs {s.Pairs}, flops {s.Flops}, bytes {s.Bytes}) lies outside the job's geometry Q{g.QueryShape}, {g.BlockCount} key blocks");
        }

        return s;
    }

    internal static void WriteNodes(ref MessagePackWriter writer, TreeNode[] nodes)
    {
        writer.WriteArrayHeader(2 * nodes.Length);
        foreach (var node in nodes)
        {
            writer.Write(node.Level);
            writer.Write(node.Index);
        }
    }

    internal static TreeNode[] ReadNodes(ref MessagePackReader reader)
    {
        var pairs = ReadInts(ref reader, "tree nodes");
        if (pairs.Length % 2 != 0)
        {
            throw new WireFormatException($"{pairs.Length} tree node values are not level and index pairs");
        }

        var nodes = new TreeNode[pairs.Length / 2];
        for (int i = 0; i < nodes.Length; i++)
        {
            int level = pairs[2 * i], index = pairs[(2 * i) + 1];
            if (level is < 0 or > 31 || index < 0)
            {
                throw new WireFormatException($"tree node {i} has level {level}, index {index}");
            }

            nodes[i] = new TreeNode(level, index);
        }

        return nodes;
    }

    internal static void WritePartials(ref MessagePackWriter writer, PartialSet p)
    {
        writer.WriteArrayHeader(6);
        WriteNodes(ref writer, p.Nodes);
        writer.Write(p.Rows);
        writer.Write(p.ValueDim);
        WriteFloats(ref writer, p.M);
        WriteFloats(ref writer, p.L);
        WriteFloats(ref writer, p.O);
    }

    internal static PartialSet ReadPartials(ref MessagePackReader reader)
    {
        Fields(ref reader, 6, "partials");
        var nodes = ReadNodes(ref reader);
        int rows = NonNegative(reader.ReadInt32(), "partial rows"), width = reader.ReadInt32();
        if (width < 1)
        {
            throw new WireFormatException($"partials of value width {width}");
        }

        long cells = (long)nodes.Length * rows;
        return new PartialSet(nodes, rows, width, ReadFloats(ref reader, "m", cells), ReadFloats(ref reader, "l", cells), ReadFloats(ref reader, "o", cells * width));
    }

    internal static void WriteCoverage(ref MessagePackWriter writer, CoverageParts p)
    {
        writer.WriteArrayHeader(3);
        WriteNodes(ref writer, p.Nodes);
        writer.Write(p.Keys);
        WriteFloats(ref writer, p.Values.AsSpan(0, p.Nodes.Length * p.Keys));
    }

    internal static CoverageParts ReadCoverage(ref MessagePackReader reader)
    {
        Fields(ref reader, 3, "coverage parts");
        var nodes = ReadNodes(ref reader);
        int keys = NonNegative(reader.ReadInt32(), "coverage keys");
        return new CoverageParts(nodes, keys, ReadFloats(ref reader, "coverage values", (long)nodes.Length * keys));
    }

    internal static void WriteCells(ref MessagePackWriter writer, WeightsCells cells)
    {
        var r = cells.Range;
        writer.WriteArrayHeader(6);
        writer.Write(r.CellRowStart);
        writer.Write(r.CellRowEnd);
        writer.Write(r.CellColStart);
        writer.Write(r.CellColEnd);
        writer.Write(r.DataBlockEnd);
        WriteFloats(ref writer, cells.Values);
    }

    internal static WeightsCells ReadCells(ref MessagePackReader reader)
    {
        Fields(ref reader, 6, "weight cells");
        var range = new WeightsCellRange(reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32());
        if (range.CellRowStart < 0 || range.CellRowEnd < range.CellRowStart || range.CellColStart < 0 || range.CellColEnd < range.CellColStart)
        {
            throw new WireFormatException($"cells [{range.CellRowStart}, {range.CellRowEnd}) × [{range.CellColStart}, {range.CellColEnd}) are not ranges");
        }

        return new WeightsCells(range, ReadFloats(ref reader, "cell values", range.Count));
    }

    internal static void WriteProgress(WireCodec codec, ref MessagePackWriter w, JobProgress m)
    {
        WriteJob(ref w, m.Job);
        w.Write(m.ShardsDone);
        w.Write(m.ShardsTotal);
        w.Write(m.FlopsDone);
        w.Write(m.FlopsTotal);
        w.Write(m.Elapsed.Ticks);
    }

    internal static JobProgress ReadProgress(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        int done = NonNegative(r.ReadInt32(), "shards done"), total = NonNegative(r.ReadInt32(), "shards total");
        double flopsDone = r.ReadDouble(), flopsTotal = r.ReadDouble();
        long ticks = NonNegative(r.ReadInt64(), "elapsed ticks");
        if (done > total || !(flopsDone >= 0) || !(flopsTotal >= 0) || double.IsInfinity(flopsTotal))
        {
            throw new WireFormatException($"progress {done} of {total} shards, {flopsDone} of {flopsTotal} FLOPs");
        }

        return new JobProgress(job, done, total, flopsDone, flopsTotal, TimeSpan.FromTicks(ticks));
    }

    internal static void WriteRows(WireCodec codec, ref MessagePackWriter w, RowsFinished m)
    {
        WriteJob(ref w, m.Job);
        w.Write(m.Batch);
        w.Write(m.Head);
        w.Write(m.RowStart);
        w.Write(m.RowCount);
        WriteFloats(ref w, m.Output);
        WriteFloats(ref w, m.Lse);
        if (m.Entropy is { } entropy)
        {
            WriteFloats(ref w, entropy);
        }
        else
        {
            w.WriteNil();
        }
    }

    internal static RowsFinished ReadRows(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        int batch = r.ReadInt32(), head = r.ReadInt32(), rowStart = r.ReadInt32(), rowCount = NonNegative(r.ReadInt32(), "row count");
        var output = ReadFloats(ref r, "output");
        if (rowCount == 0 ? output.Length != 0 : output.Length % rowCount != 0)
        {
            throw new WireFormatException($"{output.Length} output values do not split into {rowCount} rows");
        }

        return new RowsFinished(job, batch, head, rowStart, rowCount, output, ReadFloats(ref r, "lse", rowCount), ReadOptionalFloats(ref r, "entropy") is { } e ? e.Length == rowCount ? e : throw new WireFormatException($"entropy holds {e.Length} values for {rowCount} rows") : null);
    }

    internal static void WriteCoverageFinished(WireCodec codec, ref MessagePackWriter w, CoverageFinished m)
    {
        WriteJob(ref w, m.Job);
        w.Write(m.Batch);
        w.Write(m.KvHead);
        w.Write(m.KeyStart);
        w.Write(m.KeyCount);
        WriteFloats(ref w, m.Coverage);
    }

    internal static CoverageFinished ReadCoverageFinished(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        int batch = r.ReadInt32(), kvHead = r.ReadInt32(), keyStart = r.ReadInt32(), keyCount = NonNegative(r.ReadInt32(), "key count");
        return new CoverageFinished(job, batch, kvHead, keyStart, keyCount, ReadFloats(ref r, "coverage", keyCount));
    }

    internal static void WriteWeightsFinished(WireCodec codec, ref MessagePackWriter w, WeightsFinished m)
    {
        WriteJob(ref w, m.Job);
        w.Write(m.CellRowStart);
        w.Write(m.CellRowCount);
        w.Write(m.CellColStart);
        w.Write(m.CellColCount);
        WriteFloats(ref w, m.Values);
    }

    internal static WeightsFinished ReadWeightsFinished(WireCodec codec, ref MessagePackReader r)
    {
        var job = Job(ref r);
        int rowStart = r.ReadInt32(), rows = NonNegative(r.ReadInt32(), "cell rows"), colStart = r.ReadInt32(), cols = NonNegative(r.ReadInt32(), "cell columns");
        return new WeightsFinished(job, rowStart, rows, colStart, cols, ReadFloats(ref r, "cell values", (long)rows * cols));
    }
}
