using System.Diagnostics.CodeAnalysis;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels;

/// <summary>
/// The keys and values of a decoding loop, kept across steps in the layout the decoding kernel
/// reads: each step appends the new tokens' keys and values with <see cref="Append"/> and computes
/// its few query rows against every key so far with
/// <see cref="Attention.Compute(AttentionTensor, KeyValueCache, AttentionOptions?, ComputeOptions?, CancellationToken)"/>.
/// The output has the bits <see cref="Attention.Compute(AttentionTensor, AttentionTensor, AttentionTensor, AttentionOptions?, ComputeOptions?, CancellationToken)"/>
/// gives for the same Q against K and V tensors holding the same keys and values.
/// </summary>
/// <remarks>
/// <para>
/// Why a layout of its own: a decoding step reads each key and value once and does four
/// multiply-adds per float read (four query heads a key/value head), so memory bandwidth bounds it.
/// K and V as <c>[B, H_kv, N, d]</c> tensors make the kernel transpose K as it reads it, eight rows
/// at a time, and read V's rows in halves: patterns the CPU's prefetchers follow badly (on AMD Zen 4,
/// one thread read K and V in those orders at 12–16 GB/s against 21–26 GB/s in order). Here every
/// 64-key chunk of a block holds its keys transposed, <c>[d_k, 64]</c>, and every 64-column chunk of
/// a block's values <c>[BlockSize, 64]</c>: each register tile reads 32 KiB in address order.
/// </para>
/// <para>
/// Storage is a list of blocks of <see cref="BlockSize"/> keys per (batch, key/value head), in slabs
/// allocated as keys arrive (on 2 MiB pages once a slab is large: with 4 KiB pages one thread read
/// a cache at 15.5–18 GB/s, with 2 MiB pages at 19.5–20.5): appending never moves what is stored. Appends
/// and computations may come from several threads; they run one at a time.
/// </para>
/// </remarks>
[SuppressMessage("Reliability", "CA1001", Justification = "The gate is a SemaphoreSlim whose wait handle is never asked for: it holds no handle to release.")]
public sealed class KeyValueCache
{
    /// <summary>Keys per chunk of a block: the widest register tile's columns (4 vectors of 16 floats); narrower tiles read part of a chunk.</summary>
    internal const int Chunk = 64;

    /// <summary>Bytes a slab of blocks grows to: whole 2 MiB pages, so a step reads its keys without a TLB miss every 4 KiB.</summary>
    private const long SlabBytes = 4L << 20;

    /// <summary>Per (batch, kv-head): where each block starts, in the slabs that hold them.</summary>
    private readonly List<(float[] Slab, int Start)>[] blocks;
    private readonly int blockFloats;
    private readonly SemaphoreSlim gate = new(1, 1);
    private double maxKeyNorm;
    private double maxValueAbs;

    /// <summary>An empty cache for keys of <paramref name="keyDim"/> and values of <paramref name="valueDim"/> features.</summary>
    /// <param name="batch">Sequences decoded together (B).</param>
    /// <param name="kvHeads">Key/value heads (H_kv); the queries may have any multiple of them.</param>
    /// <param name="keyDim">Features per key (d_k).</param>
    /// <param name="valueDim">Features per value (d_v).</param>
    /// <param name="blockSize">Keys per canonical block: every computation on this cache uses it (the bits depend on it). Default 128.</param>
    public KeyValueCache(int batch, int kvHeads, int keyDim, int valueDim, int blockSize = AttentionOptions.DefaultBlockSize)
    {
        foreach (var (name, value) in new[] { (nameof(batch), batch), (nameof(kvHeads), kvHeads), (nameof(keyDim), keyDim), (nameof(valueDim), valueDim) })
        {
            if (value <= 0)
            {
                throw new AttentionInputException($"key/value cache: {name} must be positive; got {value}");
            }
        }

        ProblemValidator.CheckBlockSize(blockSize);

        long floats = BlockFloatsFor(keyDim, valueDim, blockSize);
        if (floats + 15 > Array.MaxLength)
        {
            throw new AttentionInputException($"key/value cache: a block of {blockSize} keys with d_k {keyDim} and d_v {valueDim} needs {floats:N0} floats, more than one array holds");
        }

        blockFloats = (int)floats;

        Batch = batch;
        KvHeads = kvHeads;
        KeyDim = keyDim;
        ValueDim = valueDim;
        BlockSize = blockSize;
        blocks = new List<(float[] Slab, int Start)>[batch * kvHeads];
        for (int g = 0; g < blocks.Length; g++)
        {
            blocks[g] = [];
        }
    }

    public int Batch { get; }

    public int KvHeads { get; }

    public int KeyDim { get; }

    public int ValueDim { get; }

    /// <summary>Keys per canonical block; <see cref="AttentionOptions.BlockSize"/> of every computation on this cache must equal it.</summary>
    public int BlockSize { get; }

    /// <summary>Keys (and values) appended so far, per (batch, key/value head).</summary>
    public int Length { get; private set; }

    /// <summary>Floats from a block's keys to its values: <c>⌈BlockSize/64⌉·64·d_k</c>.</summary>
    internal int ValuesStart => ChunksOf(BlockSize) * Chunk * KeyDim;

    /// <summary>The largest row norm of any key appended; with Q's, it bounds every score (see the problem's overflow checks).</summary>
    internal double MaxKeyNorm => maxKeyNorm;

    /// <summary>The largest magnitude of any value appended.</summary>
    internal double MaxValueAbs => maxValueAbs;

    /// <summary>
    /// The gate that makes appends, truncations and steps on this cache run one at a time. A
    /// semaphore rather than a lock: a step on the embedded pipeline holds it across awaits, while
    /// its shards compute on the workers' threads.
    /// </summary>
    internal SemaphoreSlim Gate => gate;

    /// <summary>
    /// Appends <c>n</c> keys and values to every (batch, key/value head): <paramref name="keys"/>
    /// <c>[B, H_kv, n, d_k]</c> and <paramref name="values"/> <c>[B, H_kv, n, d_v]</c>, n ≥ 1. Every
    /// value is checked first (finite; a NaN or ±Inf is named by its index), so a failed append
    /// leaves the cache as it was.
    /// </summary>
    public void Append(AttentionTensor keys, AttentionTensor values)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        if (keys.IsWindow || keys.IsSegmented || values.IsWindow || values.IsSegmented)
        {
            throw new AttentionInputException($"key/value cache: append whole tensors, not windows or segmented ones ({keys}, {values})");
        }

        if (keys.Batch != Batch || keys.Heads != KvHeads || keys.Dim != KeyDim || keys.Seq <= 0)
        {
            throw new AttentionInputException($"key/value cache: {keys} does not append to [{Batch}, {KvHeads}, n, {KeyDim}] keys (n ≥ 1)");
        }

        if (values.Batch != Batch || values.Heads != KvHeads || values.Dim != ValueDim || values.Seq != keys.Seq)
        {
            throw new AttentionInputException($"key/value cache: {values} does not hold the values of the {keys.Seq} keys of {keys}: expected [{Batch}, {KvHeads}, {keys.Seq}, {ValueDim}]");
        }

        double keyNorm = ProblemValidator.MaxRowNorm(keys, out _);
        ProblemValidator.MaxRowNorm(values, out double valueAbs);
        gate.Wait();
        try
        {
            int n = keys.Seq;
            if ((long)Length + n > int.MaxValue - BlockSize)
            {
                throw new AttentionInputException($"key/value cache: {Length:N0} keys and {n:N0} more exceed the {int.MaxValue - BlockSize:N0} a cache holds");
            }

            var k = keys.Data.Span;
            var v = values.Data.Span;
            for (int g = 0; g < blocks.Length; g++)
            {
                int b = g / KvHeads, h = g % KvHeads;
                for (int i = 0; i < n; i++)
                {
                    int j = Length + i;
                    if (j / BlockSize == blocks[g].Count)
                    {
                        AddSlab(blocks[g]);
                    }

                    Store(g, j, k.Slice((int)keys.RowOffset(b, h, i), KeyDim), v.Slice((int)values.RowOffset(b, h, i), ValueDim));
                }
            }

            Length += n;
            maxKeyNorm = Math.Max(maxKeyNorm, keyNorm);
            maxValueAbs = Math.Max(maxValueAbs, valueAbs);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// Drops every key and value from position <paramref name="length"/> on (speculative decoding
    /// rejecting draft tokens, say); the next append continues from there. The slabs stay allocated.
    /// </summary>
    public void Truncate(int length)
    {
        gate.Wait();
        try
        {
            if (length < 0 || length > Length)
            {
                throw new AttentionInputException($"key/value cache: cannot truncate {Length:N0} keys to {length:N0}; the new length must lie in [0, {Length:N0}]");
            }

            // The dropped positions read as zeros again, as positions never written do: the bits of a
            // step then never depend on what was once there (the kernel masks them either way).
            var zeroKey = new float[KeyDim];
            var zeroValue = new float[ValueDim];
            for (int g = 0; g < blocks.Length; g++)
            {
                for (int j = length; j < Length; j++)
                {
                    Store(g, j, zeroKey, zeroValue);
                }
            }

            Length = length;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// The problem of one step of <paramref name="q"/> against every key so far, its K and V windows
    /// of no rows and its keys and values read from this cache (<see cref="AttentionProblem.Cache"/>):
    /// Q checked (finite) and the overflow bounds applied with the largest key norm and value the
    /// cache has kept since its appends were checked. The caller holds <see cref="Gate"/> until the
    /// step is done, so the cache does not change under it.
    /// </summary>
    internal AttentionProblem StepProblem(AttentionTensor q, AttentionOptions? options)
    {
        ArgumentNullException.ThrowIfNull(q);
        options ??= new AttentionOptions { BlockSize = BlockSize };
        if (options.BlockSize != BlockSize)
        {
            throw new AttentionInputException($"the key/value cache holds blocks of {BlockSize} keys but the options ask for blocks of {options.BlockSize} (the bits depend on it); use the cache's block size");
        }

        if (options.Score is not (ScoreFunction.Dot or ScoreFunction.Gaussian))
        {
            throw new AttentionInputException($"a key/value cache holds the keys as appended, which the {options.Score} score does not read (it scores normalised or projected keys); compute it with Attention.Compute on K and V tensors");
        }

        if (q.IsWindow || q.IsSegmented)
        {
            throw new AttentionInputException($"{q}: a step against a key/value cache takes a whole Q tensor");
        }

        if (q.Seq > PanelKernelShape.PanelRows)
        {
            throw new AttentionInputException($"{q} has {q.Seq} query rows per head; a step against a key/value cache takes at most {PanelKernelShape.PanelRows} (compute longer queries with Attention.Compute on K and V tensors)");
        }

        if (Length == 0)
        {
            throw new AttentionInputException("the key/value cache holds no keys yet; append some before computing against it");
        }

        var geometry = AttentionGeometry.Create(q.ShapeInfo, KeyShape(Length), ValueShape(Length), options);
        var problem = AttentionProblem.Create(geometry, q, NoRows(geometry.KeyShape), NoRows(geometry.ValueShape), null, checkValues: false).WithCache(this);
        CheckStep(problem, ProblemValidator.MaxRowNorm(q, out _));
        return problem;
    }

    /// <summary>
    /// Throws unless <paramref name="problem"/> (of this cache) is one this cache can serve now: its
    /// shapes and block size the cache's, its keys the cache's <see cref="Length"/>, and no score or
    /// sum able to overflow for Q rows of norm up to <paramref name="qNorm"/>.
    /// </summary>
    internal void CheckStep(AttentionProblem problem, double qNorm)
    {
        var g = problem.Geometry;
        if (g.Batch != Batch || g.KvHeads != KvHeads || g.KeyDim != KeyDim || g.ValueDim != ValueDim || g.BlockSize != BlockSize || g.KeySeq != Length)
        {
            throw new AttentionInputException($"a step of {g} does not fit the key/value cache of [{Batch}, {KvHeads}, {Length}, {KeyDim}] keys, d_v {ValueDim}, blocks of {BlockSize}");
        }

        ProblemValidator.CheckBounds(problem, qNorm, maxKeyNorm, maxValueAbs);
    }

    /// <summary>A window of no rows of a tensor of <paramref name="shape"/>: a step's K or V, which the kernel reads from the cache.</summary>
    internal static AttentionTensor NoRows(TensorShape shape) => AttentionTensor.Window(shape, Memory<float>.Empty, 0, 0, 0, 0);

    private TensorShape KeyShape(int length) => new("K", Batch, KvHeads, length, KeyDim);

    private TensorShape ValueShape(int length) => new("V", Batch, KvHeads, length, ValueDim);

    /// <summary>
    /// Copies keys [<paramref name="first"/>, +<paramref name="count"/>) of (b, kvh) into
    /// <paramref name="keys"/> <c>[count, d_k]</c> and their values into <paramref name="values"/>
    /// <c>[count, d_v]</c>, as K and V tensors hold them: a shard's data when it leaves the process.
    /// </summary>
    internal void CopyRows(int b, int kvh, int first, int count, Span<float> keys, Span<float> values)
    {
        if (b < 0 || b >= Batch || kvh < 0 || kvh >= KvHeads || first < 0 || count < 0 || (long)first + count > Length)
        {
            throw new AttentionInputException($"keys [{first}, {(long)first + count}) of batch {b}, key/value head {kvh} are outside the key/value cache's [{Batch}, {KvHeads}, {Length}]");
        }

        if (keys.Length != (long)count * KeyDim || values.Length != (long)count * ValueDim)
        {
            throw new ArgumentException($"{count} keys and values need {(long)count * KeyDim} and {(long)count * ValueDim} floats; got {keys.Length} and {values.Length}");
        }

        for (int i = 0; i < count; i++)
        {
            int j = first + i, c = j % BlockSize;
            var (slab, start) = blocks[(b * KvHeads) + kvh][j / BlockSize];
            var block = slab.AsSpan(start, blockFloats);
            int at = (c / Chunk * Chunk * KeyDim) + (c % Chunk);
            for (int f = 0; f < KeyDim; f++)
            {
                keys[(i * KeyDim) + f] = block[at + (f * Chunk)];
            }

            for (int u = 0; u * Chunk < ValueDim; u++)
            {
                int width = Math.Min(Chunk, ValueDim - (u * Chunk));
                block.Slice(ValuesStart + (u * Chunk * BlockSize) + (c * Chunk), width).CopyTo(values.Slice((i * ValueDim) + (u * Chunk), width));
            }
        }
    }

    /// <summary>Writes key and value <paramref name="j"/> of (batch, kv-head) <paramref name="g"/> into its block.</summary>
    private void Store(int g, int j, ReadOnlySpan<float> key, ReadOnlySpan<float> value)
    {
        var (slab, start) = blocks[g][j / BlockSize];
        var block = slab.AsSpan(start, blockFloats);
        int c = j % BlockSize;

        // Key j: feature k at (c/64)·64·d_k + k·64 + c mod 64.
        int at = (c / Chunk * Chunk * KeyDim) + (c % Chunk);
        for (int f = 0; f < KeyDim; f++)
        {
            block[at + (f * Chunk)] = key[f];
        }

        // Value j: column u·64 + x at ValuesStart + u·64·BlockSize + c·64 + x.
        for (int u = 0; u * Chunk < ValueDim; u++)
        {
            int width = Math.Min(Chunk, ValueDim - (u * Chunk));
            value.Slice(u * Chunk, width).CopyTo(block.Slice(ValuesStart + (u * Chunk * BlockSize) + (c * Chunk), width));
        }
    }

    /// <summary>
    /// Block <paramref name="kb"/> of (b, kvh): its keys from the returned reference on, chunk t of
    /// 64 keys at <c>t·64·d_k</c> as a <c>[d_k, 64]</c> matrix; its values from
    /// <see cref="ValuesStart"/> on, chunk u of 64 columns at <c>u·64·BlockSize</c> as a
    /// <c>[BlockSize, 64]</c> matrix. Keys past <see cref="Length"/> read as zeros.
    /// </summary>
    internal ref float Block(int b, int kvh, int kb)
    {
        var (slab, start) = blocks[(b * KvHeads) + kvh][kb];
        return ref slab[start];
    }

    /// <summary>
    /// A zeroed slab for the next blocks of one (batch, kv-head): as many blocks as the head holds
    /// already (so a short cache stays small and a long one allocates a logarithmic number of
    /// times), at most <see cref="SlabBytes"/>, at least one; large ones on 2 MiB pages. Each block
    /// starts on a 64-byte boundary (a block is a multiple of 16 floats), so no vector load of it
    /// spans two cache lines; slabs are large arrays, which the GC does not move.
    /// </summary>
    private void AddSlab(List<(float[] Slab, int Start)> head)
    {
        const int hugePage = (int)(HugePages.HugePage / sizeof(float));
        int count = (int)Math.Clamp(Math.Min(head.Count, SlabBytes / sizeof(float) / blockFloats), 1, (Array.MaxLength - hugePage) / blockFloats);
        bool huge = (long)count * blockFloats * sizeof(float) >= SlabBytes;
        var slab = HugePages.Floats((count * blockFloats) + (huge ? hugePage : 15));
        int pad = huge ? HugePages.PadToHugePage(slab) : AlignedFloats.AlignmentPad(slab);
        for (int i = 0; i < count; i++)
        {
            head.Add((slab, pad + (i * blockFloats)));
        }
    }

    /// <summary>Keys per chunk rounded up: the chunks that hold <paramref name="count"/> keys or columns.</summary>
    private static int ChunksOf(int count) => (count + Chunk - 1) / Chunk;

    private static long BlockFloatsFor(int keyDim, int valueDim, int blockSize)
        => ((long)ChunksOf(blockSize) * Chunk * keyDim) + ((long)ChunksOf(valueDim) * Chunk * blockSize);
}
