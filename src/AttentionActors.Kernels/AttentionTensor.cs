namespace AttentionActors.Kernels;

/// <summary>
/// A float32 tensor in C order with shape <c>[batch, heads, seq, dim]</c> (PyTorch's layout).
/// The storage may be an array, a pooled buffer or a memory-mapped file.
/// </summary>
public sealed class AttentionTensor
{
    public AttentionTensor(string name, Memory<float> data, int batch, int heads, int seq, int dim)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (batch < 0 || heads < 0 || seq < 0 || dim < 0)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {seq}, {dim}] has a negative dimension");
        }

        long count = (long)batch * heads * seq * dim;
        if (count != data.Length)
        {
            throw new AttentionInputException($"{name}: shape [{batch}, {heads}, {seq}, {dim}] needs {count} elements but the data holds {data.Length}");
        }

        Name = name;
        Data = data;
        Batch = batch;
        Heads = heads;
        Seq = seq;
        Dim = dim;
    }

    /// <summary>The name used in error messages (Q, K, V, …).</summary>
    public string Name { get; }

    public Memory<float> Data { get; }

    public int Batch { get; }

    public int Heads { get; }

    public int Seq { get; }

    public int Dim { get; }

    public long Length => Data.Length;

    public int[] Shape => [Batch, Heads, Seq, Dim];

    /// <summary>Allocates a zeroed tensor.</summary>
    public static AttentionTensor Zeros(string name, int batch, int heads, int seq, int dim)
        => new(name, new float[checked(batch * heads * seq * dim)], batch, heads, seq, dim);

    /// <summary>Wraps an array without copying.</summary>
    public static AttentionTensor FromArray(string name, float[] data, int batch, int heads, int seq, int dim)
        => new(name, data, batch, heads, seq, dim);

    /// <summary>Offset of row <paramref name="i"/> of head <paramref name="h"/> in batch <paramref name="b"/>.</summary>
    public long RowOffset(int b, int h, int i) => (((long)b * Heads + h) * Seq + i) * Dim;

    /// <summary>Formats a flat element offset as <c>Name[b, h, i, d]</c>.</summary>
    public string DescribeIndex(long offset)
    {
        long d = offset % Math.Max(Dim, 1);
        long rest = offset / Math.Max(Dim, 1);
        long i = rest % Math.Max(Seq, 1);
        rest /= Math.Max(Seq, 1);
        long h = rest % Math.Max(Heads, 1);
        long b = rest / Math.Max(Heads, 1);
        return $"{Name}[{b}, {h}, {i}, {d}]";
    }

    public override string ToString() => $"{Name}[{Batch}, {Heads}, {Seq}, {Dim}]";
}
