namespace AttentionActors.Kernels;

/// <summary>
/// A float32 tensor in C order with shape <c>[batch, heads, seq, dim]</c> (PyTorch's layout).
/// The storage may be an array, a pooled buffer or a memory-mapped file. A <em>window</em> holds
/// only rows [SeqStart, SeqStart + SeqCount) of one (batch, head) of the full tensor — a shard's
/// Q rows or K/V blocks — and keeps the full shape and global indices, so masks, ALiBi and the
/// canonical tree see the same positions as on the whole tensor. A tensor of more values than one
/// buffer addresses (2³¹ − 1) is held in <em>segments</em> of whole (batch, head) planes — a
/// memory-mapped file in pieces — and is reached row range by row range (<see cref="Rows"/>).
/// </summary>
public sealed class AttentionTensor
{
    private readonly int windowBatch;
    private readonly int windowHead;
    private readonly Memory<float> data;

    /// <summary>Whole (batch, head) planes, <see cref="planesPerSegment"/> to a segment (the last may hold fewer); null when <see cref="data"/> holds the tensor.</summary>
    private readonly Memory<float>[]? segments;
    private readonly int planesPerSegment;

    public AttentionTensor(string name, Memory<float> data, int batch, int heads, int seq, int dim)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        CheckShape(name, batch, heads, seq, dim);
        long count = (long)batch * heads * seq * dim;
        if (count != data.Length)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {seq}, {dim}] needs {count} elements but the data holds {data.Length}");
        }

        Name = name;
        this.data = data;
        Batch = batch;
        Heads = heads;
        Seq = seq;
        Dim = dim;
        SeqCount = seq;
        Length = count;
        windowBatch = -1;
    }

    private AttentionTensor(string name, Memory<float>[] segments, int planesPerSegment, int batch, int heads, int seq, int dim)
    {
        Name = name;
        this.segments = segments;
        this.planesPerSegment = planesPerSegment;
        Batch = batch;
        Heads = heads;
        Seq = seq;
        Dim = dim;
        SeqCount = seq;
        Length = (long)batch * heads * seq * dim;
        windowBatch = -1;
    }

    private AttentionTensor(string name, Memory<float> data, TensorShape shape, int b, int h, int seqStart, int seqCount)
    {
        Name = name;
        this.data = data;
        Length = data.Length;
        Batch = shape.Batch;
        Heads = shape.Heads;
        Seq = shape.Seq;
        Dim = shape.Dim;
        windowBatch = b;
        windowHead = h;
        SeqStart = seqStart;
        SeqCount = seqCount;
    }

    /// <summary>The name used in error messages (Q, K, V, …).</summary>
    public string Name { get; }

    /// <summary>
    /// The values held: the whole tensor, or a window's rows. A segmented tensor has no single
    /// buffer: reading this throws <see cref="AttentionInputException"/>; use <see cref="Rows"/>.
    /// </summary>
    public Memory<float> Data => segments is null
        ? data
        : throw new AttentionInputException($"{Name}[{Batch}, {Heads}, {Seq}, {Dim}] holds {Length:N0} values in {segments.Length} segments, more than one buffer addresses ({Array.MaxLength:N0}); only a sharded job (the embedded pipeline or a cluster) reads it, row range by row range");

    /// <summary>True when the tensor is held in several buffers of whole (batch, head) planes (see <see cref="Segmented"/>).</summary>
    public bool IsSegmented => segments is not null;

    public int Batch { get; }

    public int Heads { get; }

    public int Seq { get; }

    public int Dim { get; }

    /// <summary>First row held (0 unless a window).</summary>
    public int SeqStart { get; }

    /// <summary>Rows held per (batch, head): <see cref="Seq"/>, or a window's row count.</summary>
    public int SeqCount { get; }

    public bool IsWindow => windowBatch >= 0;

    /// <summary>Values held: the whole tensor's, or a window's.</summary>
    public long Length { get; }

    public int[] Shape => [Batch, Heads, Seq, Dim];

    public TensorShape ShapeInfo => new(Name, Batch, Heads, Seq, Dim);

    /// <summary>Allocates a zeroed tensor.</summary>
    public static AttentionTensor Zeros(string name, int batch, int heads, int seq, int dim)
        => new(name, HugePages.Floats(checked(batch * heads * seq * dim)), batch, heads, seq, dim);

    /// <summary>Wraps an array without copying.</summary>
    public static AttentionTensor FromArray(string name, float[] data, int batch, int heads, int seq, int dim)
        => new(name, data, batch, heads, seq, dim);

    /// <summary>
    /// A tensor held in <paramref name="segments"/>, each a run of whole (batch, head) planes of
    /// <c>seq × dim</c> values in C order: every segment but the last holds the same number of
    /// planes, the last the rest. Throws <see cref="AttentionInputException"/> naming what does not fit.
    /// </summary>
    public static AttentionTensor Segmented(string name, IReadOnlyList<Memory<float>> segments, int batch, int heads, int seq, int dim)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(segments);
        CheckShape(name, batch, heads, seq, dim);
        long plane = (long)seq * dim, planes = (long)batch * heads;
        if (segments.Count == 0 || plane == 0 || planes == 0)
        {
            throw new AttentionInputException($"{name}: a segmented tensor needs at least one segment and a non-empty shape; got {segments.Count} segments for [{batch}, {heads}, {seq}, {dim}]");
        }

        if (segments[0].Length % plane != 0 || segments[0].Length == 0)
        {
            throw new AttentionInputException($"{name}: segment 0 holds {segments[0].Length:N0} values, not a whole number of {seq} × {dim} planes");
        }

        int perSegment = (int)(segments[0].Length / plane);
        long expectedSegments = (planes + perSegment - 1) / perSegment;
        if (segments.Count != expectedSegments)
        {
            throw new AttentionInputException($"{name}: {segments.Count} segments of {perSegment} planes cannot hold the {planes} planes of [{batch}, {heads}, {seq}, {dim}] (that takes {expectedSegments})");
        }

        for (int i = 0; i < segments.Count; i++)
        {
            long expected = Math.Min(perSegment, planes - ((long)i * perSegment)) * plane;
            if (segments[i].Length != expected)
            {
                throw new AttentionInputException($"{name}: segment {i} holds {segments[i].Length:N0} values; expected {expected:N0}");
            }
        }

        return new AttentionTensor(name, [.. segments], perSegment, batch, heads, seq, dim);
    }

    /// <summary>
    /// Rows [<paramref name="i"/>, <paramref name="i"/> + <paramref name="count"/>) of head
    /// <paramref name="h"/> in batch <paramref name="b"/> (global indices, also for a window), as one
    /// buffer: a (batch, head) plane never spans two segments.
    /// </summary>
    public Memory<float> Rows(int b, int h, int i, int count)
    {
        if (segments is null)
        {
            return data.Slice(checked((int)RowOffset(b, h, i)), checked(count * Dim));
        }

        if (b < 0 || b >= Batch || h < 0 || h >= Heads || i < 0 || count < 0 || (long)i + count > Seq)
        {
            throw new AttentionInputException($"{Name}: rows [{i}, {(long)i + count}) of batch {b}, head {h} lie outside [{Batch}, {Heads}, {Seq}, {Dim}]");
        }

        long plane = ((long)b * Heads) + h;
        int offset = checked((int)((plane % planesPerSegment * Seq * Dim) + ((long)i * Dim)));
        return segments[plane / planesPerSegment].Slice(offset, count * Dim);
    }

    /// <summary>
    /// Wraps <paramref name="data"/> as rows [seqStart, seqStart + seqCount) of (b, h) of a tensor of
    /// <paramref name="shape"/>, or throws <see cref="AttentionInputException"/> naming what does not fit.
    /// </summary>
    public static AttentionTensor Window(TensorShape shape, Memory<float> data, int b, int h, int seqStart, int seqCount)
    {
        ArgumentException.ThrowIfNullOrEmpty(shape.Name);
        CheckShape(shape.Name, shape.Batch, shape.Heads, shape.Seq, shape.Dim);
        if (b < 0 || b >= shape.Batch || h < 0 || h >= shape.Heads)
        {
            throw new AttentionInputException($"{shape.Name}: window of batch {b}, head {h} is outside {shape}");
        }

        if (seqStart < 0 || seqCount < 0 || (long)seqStart + seqCount > shape.Seq)
        {
            throw new AttentionInputException($"{shape.Name}: window rows [{seqStart}, {(long)seqStart + seqCount}) are outside [0, {shape.Seq})");
        }

        long count = (long)seqCount * shape.Dim;
        if (count != data.Length)
        {
            throw new AttentionInputException($"{shape.Name}: window of {seqCount} rows × {shape.Dim} needs {count} elements but holds {data.Length}");
        }

        return new AttentionTensor(shape.Name, data, shape, b, h, seqStart, seqCount);
    }

    /// <summary>Offset in <see cref="Data"/> of row <paramref name="i"/> of head <paramref name="h"/> in batch <paramref name="b"/> (global indices, also for a window).</summary>
    public long RowOffset(int b, int h, int i) => IsWindow
        ? (long)(i - SeqStart) * Dim
        : ((((long)b * Heads) + h) * Seq + i) * Dim;

    /// <summary>Formats an element offset in <see cref="Data"/> as <c>Name[b, h, i, d]</c> in global indices.</summary>
    public string DescribeIndex(long offset)
    {
        long d = offset % Math.Max(Dim, 1);
        long rest = offset / Math.Max(Dim, 1);
        if (IsWindow)
        {
            return $"{Name}[{windowBatch}, {windowHead}, {SeqStart + rest}, {d}]";
        }

        long i = rest % Math.Max(Seq, 1);
        rest /= Math.Max(Seq, 1);
        long h = rest % Math.Max(Heads, 1);
        long b = rest / Math.Max(Heads, 1);
        return $"{Name}[{b}, {h}, {i}, {d}]";
    }

    public override string ToString() => IsWindow
        ? $"{Name}[{Batch}, {Heads}, {Seq}, {Dim}] rows [{SeqStart}, {SeqStart + SeqCount}) of ({windowBatch}, {windowHead})"
        : $"{Name}[{Batch}, {Heads}, {Seq}, {Dim}]";

    private static void CheckShape(string name, int batch, int heads, int seq, int dim)
    {
        if (batch < 0 || heads < 0 || seq < 0 || dim < 0)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {seq}, {dim}] has a negative dimension");
        }
    }
}
