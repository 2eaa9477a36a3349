using System.Buffers;
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.RegularExpressions;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Npy;

/// <summary>Bad .npy input; the message names the file and what is wrong.</summary>
public sealed class NpyFormatException(string message) : Exception(message);

/// <summary>
/// A float32 array read from a .npy file (format 1.0–3.0, C order, little-endian float32 or
/// float64). float32 data is memory-mapped, not copied; float64 is converted to float32 in one
/// streaming pass (values beyond float32's range are refused). A float32 file of more values than
/// one buffer addresses is mapped in <see cref="Segments"/> of whole [N, D] planes (its last two
/// dimensions), so tensors of any size are read and written in place. Dispose to unmap.
/// </summary>
public sealed partial class NpyFile : IDisposable
{
    /// <summary>The most values one segment holds by default: one buffer's limit.</summary>
    public const long MaxSegmentValues = int.MaxValue;

    /// <summary>\x93NUMPY as bytes (a u8 string literal would encode U+0093 as two bytes).</summary>
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    private readonly MappedView? view;
    private readonly Memory<float>[] segments;

    private NpyFile(string path, int[] shape, Memory<float>[] segments, MappedView? view)
    {
        Path = path;
        Shape = shape;
        this.segments = segments;
        this.view = view;
    }

    public string Path { get; }

    public int[] Shape { get; }

    /// <summary>The values as one buffer; a file held in several segments throws <see cref="NpyFormatException"/> (use <see cref="Segments"/>).</summary>
    public Memory<float> Data => segments.Length switch
    {
        0 => Memory<float>.Empty,
        1 => segments[0],
        _ => throw new NpyFormatException($"{Path}: {Count:N0} values are more than one buffer holds ({MaxSegmentValues:N0}); only a sharded job reads this file, in {segments.Length} segments"),
    };

    /// <summary>The values in runs of whole [N, D] planes: one segment unless the file is larger than <see cref="MaxSegmentValues"/> (or the segment size asked for).</summary>
    public IReadOnlyList<Memory<float>> Segments => segments;

    /// <summary>Values in the file.</summary>
    public long Count => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>Reads and checks a file's header and size only: its shape and bytes per element (4 or 8).</summary>
    public static (int[] Shape, int Width) Inspect(string path)
    {
        var (shape, width, _, _) = Check(path);
        return (shape, width);
    }

    /// <summary>Like <see cref="Inspect"/>, plus where the little-endian data start, for streaming a file of any size.</summary>
    public static (int[] Shape, int Width, long DataOffset, long Count) Layout(string path) => Check(path);

    /// <summary>Maps (float32) or converts (float64) a file; float32 data past <paramref name="segmentValues"/> values are mapped in segments of whole planes.</summary>
    public static NpyFile Read(string path, long segmentValues = MaxSegmentValues)
    {
        var (shape, width, dataOffset, count) = Check(path);
        if (count == 0)
        {
            return new NpyFile(path, shape, [], null);
        }

        if (width == 4)
        {
            var (view, segments) = MappedView.Map(path, MemoryMappedFileAccess.Read, shape, dataOffset, segmentValues);
            return new NpyFile(path, shape, segments, view);
        }

        if (count > Array.MaxLength)
        {
            throw new NpyFormatException($"{path}: {count:N0} float64 values would be converted into one float32 array, which holds at most {Array.MaxLength:N0}; save the tensor as float32 (arr.astype('<f4')), which is mapped in place at any size");
        }

        return new NpyFile(path, shape, [ConvertDoubles(path, dataOffset, count)], null);
    }

    /// <summary>
    /// Creates a zero-filled float32 .npy file of <paramref name="shape"/> and maps its data for
    /// writing, so a result can be written in place as it arrives instead of held in memory.
    /// </summary>
    public static NpyFile Create(string path, IReadOnlyList<int> shape, long segmentValues = MaxSegmentValues)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = shape.Aggregate(1L, (a, d) => a * d);
        var header = Header(shape);
        using (var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            stream.Write(header);
            stream.SetLength(header.Length + (count * 4));
        }

        if (count == 0)
        {
            return new NpyFile(path, [.. shape], [], null);
        }

        var (view, segments) = MappedView.Map(path, MemoryMappedFileAccess.ReadWrite, [.. shape], header.Length, segmentValues);
        return new NpyFile(path, [.. shape], segments, view);
    }

    /// <summary>
    /// The file as a <c>[batch, heads, seq, dim]</c> tensor named <paramref name="name"/>: one
    /// buffer, or segments of whole (batch, head) planes.
    /// </summary>
    public AttentionTensor Tensor(string name, int batch, int heads, int seq, int dim)
        => segments.Length > 1
            ? AttentionTensor.Segmented(name, segments, batch, heads, seq, dim)
            : new AttentionTensor(name, Data, batch, heads, seq, dim);

    private static (int[] Shape, int Width, long DataOffset, long Count) Check(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new NpyFormatException($"{path}: no such file");
        }

        long fileLength = new FileInfo(path).Length;
        var (descr, shape, dataOffset) = ReadHeader(path, fileLength);
        long count = shape.Aggregate(1L, (a, d) => a * d);
        int width = descr[^1] == '4' ? 4 : 8;
        long needed = dataOffset + (count * width);
        if (fileLength != needed)
        {
            throw new NpyFormatException($"{path}: header says shape ({string.Join(", ", shape)}) of {(width == 4 ? "float32" : "float64")}, which needs {needed - dataOffset:N0} data bytes, but the file has {fileLength - dataOffset:N0}{(fileLength < needed ? " (truncated?)" : "")}");
        }

        return (shape, width, dataOffset, count);
    }

    /// <summary>Writes <paramref name="data"/> as a little-endian float32 .npy file of <paramref name="shape"/>.</summary>
    public static void Write(string path, ReadOnlySpan<float> data, IReadOnlyList<int> shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        stream.Write(Header(shape));
        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data));
    }

    /// <summary>Magic, version 1.0, and the header dict padded so the data start on a 64-byte boundary.</summary>
    private static byte[] Header(IReadOnlyList<int> shape)
    {
        string dims = shape.Count == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int total = 10 + dict.Length + 1;
        int padded = (total + 63) / 64 * 64;
        string header = dict + new string(' ', padded - total) + "\n";
        var bytes = new byte[10 + header.Length];
        Magic.CopyTo(bytes);
        bytes[6] = 1;
        BitConverter.TryWriteBytes(bytes.AsSpan(8, 2), (ushort)header.Length);
        Encoding.ASCII.GetBytes(header, bytes.AsSpan(10));
        return bytes;
    }

    public void Dispose() => view?.Dispose();

    /// <summary>
    /// Reads a 1-D integer file whole (int32 '&lt;i4' or int64 '&lt;i8', as <c>numpy.save</c> writes
    /// PyTorch's <c>cu_seqlens</c>): small index arrays, not tensors.
    /// </summary>
    public static int[] ReadIntegers(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new NpyFormatException($"{path}: no such file");
        }

        long fileLength = new FileInfo(path).Length;
        var (descr, shape, dataOffset) = ReadHeader(path, fileLength, integers: true);
        if (shape.Length != 1)
        {
            throw new NpyFormatException($"{path}: shape ({string.Join(", ", shape)}) is not one-dimensional");
        }

        int width = descr[^1] == '4' ? 4 : 8;
        if (fileLength != dataOffset + ((long)shape[0] * width))
        {
            throw new NpyFormatException($"{path}: header says {shape[0]} {(width == 4 ? "int32" : "int64")} values, which need {(long)shape[0] * width:N0} data bytes, but the file has {fileLength - dataOffset:N0}");
        }

        var bytes = File.ReadAllBytes(path).AsSpan((int)dataOffset);
        var values = new int[shape[0]];
        for (int i = 0; i < values.Length; i++)
        {
            long x = width == 4 ? BitConverter.ToInt32(bytes.Slice(i * 4, 4)) : BitConverter.ToInt64(bytes.Slice(i * 8, 8));
            values[i] = x is >= int.MinValue and <= int.MaxValue ? (int)x : throw new NpyFormatException($"{path}: value [{i}] = {x} is beyond int32");
        }

        return values;
    }

    /// <summary>
    /// Reads an attention mask whole: boolean ('|b1', as <c>numpy.save</c> writes a bool tensor; True =
    /// may attend, PyTorch's SDPA convention) as the additive 0 / −∞, or float32/float64 additive values.
    /// </summary>
    public static (int[] Shape, float[] Values, bool Boolean) ReadMask(string path, long maxElements)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new NpyFormatException($"{path}: no such file");
        }

        long fileLength = new FileInfo(path).Length;
        var (descr, shape, dataOffset) = ReadHeader(path, fileLength, booleans: true);
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (count > maxElements)
        {
            throw new NpyFormatException($"{path}: shape ({string.Join(", ", shape)}) is {count:N0} values, more than the {maxElements:N0} an explicit mask may have; express the mask with --causal, --window, --key-lengths or --seq-lengths, which cost nothing");
        }

        if (descr != "|b1")
        {
            using var file = Read(path);
            return (file.Shape, file.Data.ToArray(), false);
        }

        if (fileLength != dataOffset + count)
        {
            throw new NpyFormatException($"{path}: header says {count:N0} bool values, but the file has {fileLength - dataOffset:N0} data bytes");
        }

        var bytes = File.ReadAllBytes(path).AsSpan((int)dataOffset);
        var values = new float[count];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = bytes[i] switch
            {
                0 => float.NegativeInfinity,
                1 => 0f,
                _ => throw new NpyFormatException($"{path}: bool value [{i}] is the byte {bytes[i]}, neither 0 nor 1"),
            };
        }

        return (shape, values, true);
    }

    private static (string Descr, int[] Shape, long DataOffset) ReadHeader(string path, long fileLength, bool integers = false, bool booleans = false)
    {
        using var stream = File.OpenRead(path);
        Span<byte> prefix = stackalloc byte[12];
        if (fileLength < 10 || stream.Read(prefix[..10]) != 10 || !prefix[..6].SequenceEqual(Magic))
        {
            throw new NpyFormatException($"{path}: not a .npy file (missing the \\x93NUMPY magic)");
        }

        int major = prefix[6];
        long headerLength;
        int prefixLength;
        if (major == 1)
        {
            headerLength = BitConverter.ToUInt16(prefix[8..10]);
            prefixLength = 10;
        }
        else if (major is 2 or 3)
        {
            if (stream.Read(prefix[10..12]) != 2)
            {
                throw new NpyFormatException($"{path}: truncated .npy header");
            }

            headerLength = BitConverter.ToUInt32(prefix[8..12]);
            prefixLength = 12;
        }
        else
        {
            throw new NpyFormatException($"{path}: .npy format version {major}.{prefix[7]} is not supported (1.0–3.0 are)");
        }

        if (prefixLength + headerLength > fileLength || headerLength > 1 << 20)
        {
            throw new NpyFormatException($"{path}: truncated .npy header ({headerLength} header bytes announced, file has {fileLength})");
        }

        var bytes = new byte[headerLength];
        stream.ReadExactly(bytes);
        string header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(bytes);
        string descr = Field(path, header, DescrPattern(), "descr");
        string fortran = Field(path, header, FortranPattern(), "fortran_order");
        string shapeText = Field(path, header, ShapePattern(), "shape");
        if (fortran != "False")
        {
            throw new NpyFormatException($"{path}: Fortran-order (column-major) arrays are not supported; save with np.ascontiguousarray");
        }

        if (integers)
        {
            return descr is "<i4" or "<i8"
                ? (descr, ParseShape(path, shapeText), prefixLength + headerLength)
                : throw new NpyFormatException($"{path}: dtype '{descr}' is not supported here; use int32 ('<i4') or int64 ('<i8')");
        }

        if (booleans && descr == "|b1")
        {
            return (descr, ParseShape(path, shapeText), prefixLength + headerLength);
        }

        if (descr is ">f4" or ">f8")
        {
            throw new NpyFormatException($"{path}: big-endian dtype '{descr}' is not supported; convert with arr.astype('<f{descr[^1]}')");
        }

        if (descr is not ("<f4" or "<f8"))
        {
            throw new NpyFormatException($"{path}: dtype '{descr}' is not supported; use float32 ('<f4') or float64 ('<f8'){(booleans ? ", or bool ('|b1') for a mask" : "")}");
        }

        return (descr, ParseShape(path, shapeText), prefixLength + headerLength);
    }

    private static int[] ParseShape(string path, string shapeText)
        => [.. shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => int.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : throw new NpyFormatException($"{path}: shape entry '{d}' is not a dimension"))];

    private static string Field(string path, string header, Regex pattern, string name)
    {
        var match = pattern.Match(header);
        return match.Success ? match.Groups[1].Value : throw new NpyFormatException($"{path}: .npy header has no valid '{name}' entry: {header.Trim()}");
    }

    private static float[] ConvertDoubles(string path, long offset, long count)
    {
        var result = new float[count];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        stream.Position = offset;
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            long done = 0;
            while (done < count)
            {
                int chunk = (int)Math.Min(count - done, buffer.Length / 8);
                stream.ReadExactly(buffer, 0, chunk * 8);
                var doubles = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(buffer.AsSpan(0, chunk * 8));
                for (int i = 0; i < chunk; i++)
                {
                    double x = doubles[i];
                    if (double.IsFinite(x) && Math.Abs(x) > float.MaxValue)
                    {
                        throw new NpyFormatException($"{path}: element {done + i} = {x:R} is beyond float32's range");
                    }

                    result[done + i] = (float)x;
                }

                done += chunk;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return result;
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();

    /// <summary>A whole file mapped once; its float32 data handed out as segments that share the mapping.</summary>
    private sealed unsafe class MappedView : IDisposable
    {
        private readonly MemoryMappedFile map;
        private readonly MemoryMappedViewAccessor accessor;
        private readonly byte* pointer;

        private MappedView(MemoryMappedFile map, MemoryMappedViewAccessor accessor, bool write)
        {
            this.map = map;
            this.accessor = accessor;
            byte* basePointer = null;
            accessor.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            pointer = basePointer + accessor.PointerOffset;
            Prefault.Pages(pointer, accessor.Capacity, write);
        }

        /// <summary>Maps <paramref name="path"/> and cuts its data at <paramref name="offset"/> into segments (<see cref="Segments"/>); nothing stays mapped when that fails.</summary>
        public static (MappedView View, Memory<float>[] Segments) Map(string path, MemoryMappedFileAccess access, int[] shape, long offset, long segmentValues)
        {
            var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, access);
            MappedView? view = null;
            try
            {
                view = new MappedView(map, map.CreateViewAccessor(0, 0, access), access == MemoryMappedFileAccess.ReadWrite);
                return (view, view.Segments(path, shape, offset, segmentValues));
            }
            catch
            {
                if (view is null)
                {
                    map.Dispose();
                }
                else
                {
                    view.Dispose();
                }

                throw;
            }
        }

        /// <summary>The data at <paramref name="offset"/> cut into runs of whole planes (the shape's last two dimensions) of at most <paramref name="segmentValues"/> values.</summary>
        private Memory<float>[] Segments(string path, int[] shape, long offset, long segmentValues)
        {
            long count = shape.Aggregate(1L, (a, d) => a * d);
            long plane = shape.Length >= 2 ? (long)shape[^2] * shape[^1] : count;
            long limit = Math.Min(segmentValues, MaxSegmentValues);
            if (plane > limit)
            {
                throw new NpyFormatException($"{path}: one [{(shape.Length >= 2 ? $"{shape[^2]}, {shape[^1]}" : $"{count}")}] plane holds {plane:N0} values, more than one buffer addresses ({limit:N0}); split the sequence or the heads");
            }

            long perSegment = limit / plane * plane;
            var segments = new Memory<float>[(count + perSegment - 1) / perSegment];
            for (int i = 0; i < segments.Length; i++)
            {
                long start = i * perSegment;
                segments[i] = new PointerFloats(pointer + offset + (start * 4), (int)Math.Min(perSegment, count - start)).Memory;
            }

            return segments;
        }

        public void Dispose()
        {
            accessor.SafeMemoryMappedViewHandle.ReleasePointer();
            accessor.Dispose();
            map.Dispose();
        }
    }

    /// <summary>float32 values at a pointer into a mapping that outlives them, as <see cref="Memory{T}"/>.</summary>
    private sealed unsafe class PointerFloats(byte* pointer, int length) : MemoryManager<float>
    {
        public override Span<float> GetSpan() => new(pointer, length);

        public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + ((long)elementIndex * 4));

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
