using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AttentionActors.Kernels.Tiles;

/// <summary>
/// The keys of one (batch, kv-head) over a block range starting at BlockStart, transposed once so every
/// query panel shares them. Block kb sits at <c>(kb − BlockStart)·depth·RowStride</c> as a
/// <c>[depth, bp(kb)]</c> matrix with rows <see cref="RowStride"/> apart, bp(kb) = the block's key
/// count rounded up to 16, zero padded.
/// Features: the key itself (dot, Gaussian), the key over its norm (cosine), or W_kᵀ k (additive).
/// A pack made with values also holds a copy of each block's value rows, <see cref="ValueRowStride"/>
/// apart, at <see cref="ValueOffset"/>.
/// </summary>
internal sealed class KeyPack : IDisposable
{
    private KeyPack(float[] data, int blockStart, int blockCount, int depth, int rowStride, int blockSize, int valueRowStride)
    {
        Data = data;
        start = AlignedFloats.AlignmentPad(data);
        BlockStart = blockStart;
        Depth = depth;
        RowStride = rowStride;
        BlockStride = depth * rowStride;
        ValueRowStride = valueRowStride;
        valueBlockStride = blockSize * valueRowStride;
        valueStart = start + (blockCount * BlockStride);
    }

    /// <summary>Floats from element 0 of <see cref="Data"/> to its first 64-byte boundary, where block BlockStart starts.</summary>
    private readonly int start;
    private readonly int valueStart;
    private readonly int valueBlockStride;

    /// <summary>Pooled storage (may be longer than needed); return it with <see cref="Dispose"/>.</summary>
    public float[] Data { get; private set; }

    public int BlockStart { get; }

    public int Depth { get; }

    public int BlockStride { get; }

    /// <summary>
    /// Floats from one feature row of a block to the next: Bp plus one cache line. With rows a
    /// multiple of 512 B apart (Bp = 128), the rows of a 64-key chunk would fall in only half of
    /// L1's sets and evict each other at d = 128; 16 floats more spread them over every set.
    /// </summary>
    public int RowStride { get; }

    /// <summary>The row stride for blocks of <paramref name="blockSize"/> keys.</summary>
    public static int RowStrideFor(int blockSize) => ((blockSize + 15) & ~15) + 16;

    /// <summary>
    /// The value row stride for d_v: rounded up to 16, plus one cache line when a row is longer than
    /// the 64 columns the kernel sums at a time (shorter rows are read whole, and lie contiguous).
    /// </summary>
    public static int ValueRowStrideFor(int valueDim)
    {
        int rounded = (valueDim + 15) & ~15;
        return rounded > 64 ? rounded + 16 : rounded;
    }

    /// <summary>Whether the pack holds the value rows too.</summary>
    public bool HasValues => ValueRowStride > 0;

    /// <summary>
    /// Floats from one value row to the next in the pack's copy (0 without values), see
    /// <see cref="ValueRowStrideFor"/>: V itself has rows d_v apart, 512 B at d_v = 128, so a
    /// 64-column chunk of a block's values would fall in half of L1's sets, as keys would.
    /// </summary>
    public int ValueRowStride { get; }

    /// <summary>Where the value rows of block <paramref name="kb"/> start in <see cref="Data"/> (on a 64-byte boundary).</summary>
    public int ValueOffset(int kb) => valueStart + ((kb - BlockStart) * valueBlockStride);

    public static int FeatureDepth(AttentionProblem p) => p.Options.Score == ScoreFunction.Additive ? p.Options.Additive!.AttentionDim : p.KeyDim;

    /// <summary>
    /// Where block <paramref name="kb"/> starts in <see cref="Data"/>. Blocks start on 64-byte
    /// boundaries (a block is a multiple of 16 floats), so no vector load of a key row is split
    /// across two cache lines, as long as the GC leaves the array where it was when packed (large
    /// arrays never move; a moved small one is only slower).
    /// </summary>
    public int Offset(int kb) => start + ((kb - BlockStart) * BlockStride);

    /// <summary>
    /// Allocates a pack, with room for the value rows when <paramref name="values"/>; fill it with
    /// <see cref="PackBlock"/> (blocks are independent).
    /// </summary>
    public static KeyPack Allocate(AttentionProblem p, int blockStart, int blockEnd, bool values = false)
    {
        int depth = FeatureDepth(p);
        int rowStride = RowStrideFor(p.BlockSize);
        int valueRowStride = values ? ValueRowStrideFor(p.ValueDim) : 0;
        int blocks = Math.Max(0, blockEnd - blockStart);
        long length = blocks * (((long)depth * rowStride) + ((long)p.BlockSize * valueRowStride));
        if (length + 15 > Array.MaxLength)
        {
            throw new AttentionInputException($"the packed keys and values of {blocks} blocks need {length} floats, more than one array holds; use fewer keys per shard");
        }

        // A pool's array fresh from the system is pages not touched yet: large ones come as huge pages
        // (a whole head's keys and values are several MiB, a thousand small-page faults each).
        var data = System.Buffers.ArrayPool<float>.Shared.Rent((int)length + 15);
        HugePages.Advise(data);
        return new KeyPack(data, blockStart, blocks, depth, rowStride, p.BlockSize, valueRowStride);
    }

    public static KeyPack Create(AttentionProblem p, int b, int kvh, int blockStart, int blockEnd, bool values = false)
    {
        var pack = Allocate(p, blockStart, blockEnd, values);
        for (int kb = blockStart; kb < blockEnd; kb++)
        {
            pack.PackBlock(p, b, kvh, kb);
        }

        return pack;
    }

    /// <summary>Transposes key block <paramref name="kb"/> of (b, kvh) into its place.</summary>
    /// <param name="p">The problem.</param>
    /// <param name="b">Batch.</param>
    /// <param name="kvh">Key head.</param>
    /// <param name="kb">Block.</param>
    public void PackBlock(AttentionProblem p, int b, int kvh, int kb)
    {
        int j0 = kb * p.BlockSize;
        int n = Math.Min(p.BlockSize, p.KeySeq - j0);
        int bp = (n + 15) & ~15;
        PackKeys(p, b, kvh, j0, n, bp, Data.AsSpan(Offset(kb), BlockStride), RowStride, fromMemory: false);

        // Value rows j < n only: keys past n have P = 0 and are never summed, columns past d_v never read.
        if (HasValues)
        {
            int dv = p.ValueDim;
            var vData = p.V.Data.Span.Slice((int)p.V.RowOffset(b, kvh, j0), n * dv);
            var vt = Data.AsSpan(ValueOffset(kb), valueBlockStride);
            for (int jj = 0; jj < n; jj++)
            {
                vData.Slice(jj * dv, dv).CopyTo(vt.Slice(jj * ValueRowStride, dv));
            }
        }
    }

    /// <summary>
    /// Packs columns [c0, c1) of key block <paramref name="kb"/> of (b, kvh) alone, as
    /// <see cref="PackBlock"/> lays out the whole block but with column c0 at column 0 of
    /// <paramref name="dst"/> (rows <paramref name="ld"/> apart; columns past the block's last key
    /// cleared). A panel that is the only reader of a block packs it a chunk at a time, just before
    /// scoring the chunk, into a buffer that stays in L1.
    /// </summary>
    public static void PackColumns(AttentionProblem p, int b, int kvh, int kb, int c0, int c1, Span<float> dst, int ld)
    {
        int j0 = kb * p.BlockSize;
        int n = Math.Min(p.BlockSize, p.KeySeq - j0);
        PackKeys(p, b, kvh, j0 + c0, Math.Clamp(n - c0, 0, c1 - c0), c1 - c0, dst, ld, fromMemory: true);
    }

    /// <summary>
    /// Feature k of key <c>j + c</c> of (b, kvh) into <c>dst[k·ld + c]</c> for c &lt; <paramref name="count"/>,
    /// and zeros for count ≤ c &lt; <paramref name="width"/>: the tiles read those padding columns
    /// (pooled memory is not zeroed), and their scores are masked. With <c>fromMemory</c> the keys
    /// may still be in memory (a panel packing as it goes): each group of 8 keys first asks for the
    /// keys two groups on, past the end of this call's keys up to the head's last key, so neither
    /// the transposition nor the next call starts by waiting on each line (packing K alone from
    /// memory, in calls of 64 keys: 12 GB/s when each call asked only for its own keys, 20 GB/s
    /// asking past their end, on AMD Zen 4).
    /// </summary>
    private static void PackKeys(AttentionProblem p, int b, int kvh, int j, int count, int width, Span<float> dst, int ld, bool fromMemory)
    {
        int depth = FeatureDepth(p);
        var kData = p.K.Data.Span;
        int dk = p.KeyDim;
        var score = p.Options.Score;
        for (int k = 0; k < depth && count < width; k++)
        {
            dst.Slice((k * ld) + count, width - count).Clear();
        }

        if (count == 0)
        {
            return;
        }

        if (score is ScoreFunction.Dot or ScoreFunction.Gaussian)
        {
            // From memory, the source runs on to the head's last key (within K's data): the keys the
            // transposition asks for ahead. Only its first count rows are read.
            int offset = (int)p.K.RowOffset(b, kvh, j);
            int rows = fromMemory ? (int)Math.Min(p.KeySeq - j, (kData.Length - offset) / dk) : count;
            Transpose(kData.Slice(offset, rows * dk), count, dk, dst, ld, fromMemory);
            return;
        }

        Span<float> feature = depth <= 1024 ? stackalloc float[depth] : new float[depth];
        for (int jj = 0; jj < count; jj++)
        {
            var key = kData.Slice((int)p.K.RowOffset(b, kvh, j + jj), dk);
            Features(p, score, key, feature);
            for (int k = 0; k < depth; k++)
            {
                dst[(k * ld) + jj] = feature[k];
            }
        }
    }

    public void Dispose()
    {
        var data = Data;
        Data = [];
        if (data.Length > 0)
        {
            System.Buffers.ArrayPool<float>.Shared.Return(data);
        }
    }

    /// <summary>
    /// dst[k, j] = src[j, k] for the first <paramref name="n"/> rows of <paramref name="d"/> floats of
    /// <paramref name="src"/>; dst rows have stride <paramref name="ld"/>. With
    /// <paramref name="fromMemory"/>, rows of src past n may be asked for ahead, never read.
    /// </summary>
    private static void Transpose(ReadOnlySpan<float> src, int n, int d, Span<float> dst, int ld, bool fromMemory)
    {
        int available = src.Length / d;
        ref float s = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(src);
        ref float t = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dst);

        // 8 keys at a time: 8×16 tiles transposed in registers where AVX-512 has the shuffles, then
        // 8×8 tiles where AVX has them, else eight sequential reads per row and eight contiguous
        // writes per dim. Each is a copy: the packed values are the same bits on every CPU.
        int j = 0;
        for (; j + 8 <= n; j += 8)
        {
            if (fromMemory)
            {
                PrefetchKeys(ref s, j + AheadKeys, Math.Min(available, j + AheadKeys + 8), d);
            }

            int k = 0;
            if (Avx512F.IsSupported)
            {
                for (; k + 16 <= d; k += 16)
                {
                    Transpose8x16(ref System.Runtime.CompilerServices.Unsafe.Add(ref s, (j * d) + k), d, ref System.Runtime.CompilerServices.Unsafe.Add(ref t, (k * ld) + j), ld);
                }
            }

            if (Avx.IsSupported)
            {
                for (; k + 8 <= d; k += 8)
                {
                    Transpose8x8(ref System.Runtime.CompilerServices.Unsafe.Add(ref s, (j * d) + k), d, ref System.Runtime.CompilerServices.Unsafe.Add(ref t, (k * ld) + j), ld);
                }
            }

            for (; k < d; k++)
            {
                ref float col = ref System.Runtime.CompilerServices.Unsafe.Add(ref t, (k * ld) + j);
                for (int u = 0; u < 8; u++)
                {
                    System.Runtime.CompilerServices.Unsafe.Add(ref col, u) = System.Runtime.CompilerServices.Unsafe.Add(ref s, ((j + u) * d) + k);
                }
            }
        }

        for (; j < n; j++)
        {
            for (int k = 0; k < d; k++)
            {
                dst[(k * ld) + j] = src[(j * d) + k];
            }
        }
    }

    /// <summary>How far ahead of the keys being transposed <see cref="PrefetchKeys"/> asks (16 keys of d = 128: 8 KiB).</summary>
    private const int AheadKeys = 16;

    /// <summary>
    /// Asks keys [from, end) (rows of <paramref name="d"/> floats) into L2: a hint only, it never
    /// faults and changes no value. Into L2, not L1: on a core with a 32 KiB L1 (AMD Zen 4), keys
    /// asked into L1 left the transposition's stores to its packed columns missing, and packing K
    /// alone from memory ran at 8 GB/s against 12 GB/s asked into L2.
    /// </summary>
    private static unsafe void PrefetchKeys(ref float s, int from, int end, int d)
    {
        if (!Sse.IsSupported || from >= end)
        {
            return;
        }

        ref float first = ref System.Runtime.CompilerServices.Unsafe.Add(ref s, from * d);
        int lines = (((end - from) * d) + 15) / 16;
        for (int l = 0; l < lines; l++)
        {
            Sse.Prefetch1(System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.CompilerServices.Unsafe.Add(ref first, l * 16)));
        }
    }

    /// <summary>dst[c, u] = src[u, c] for an 8×8 tile: unpack pairs of rows, shuffle pairs of pairs, swap 128-bit halves.</summary>
    private static void Transpose8x8(ref float src, int srcStride, ref float dst, int dstStride)
    {
        var r0 = Vector256.LoadUnsafe(ref src);
        var r1 = Vector256.LoadUnsafe(ref src, (nuint)srcStride);
        var r2 = Vector256.LoadUnsafe(ref src, (nuint)(2 * srcStride));
        var r3 = Vector256.LoadUnsafe(ref src, (nuint)(3 * srcStride));
        var r4 = Vector256.LoadUnsafe(ref src, (nuint)(4 * srcStride));
        var r5 = Vector256.LoadUnsafe(ref src, (nuint)(5 * srcStride));
        var r6 = Vector256.LoadUnsafe(ref src, (nuint)(6 * srcStride));
        var r7 = Vector256.LoadUnsafe(ref src, (nuint)(7 * srcStride));

        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);

        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);

        Avx.Permute2x128(u0, u4, 0x20).StoreUnsafe(ref dst);
        Avx.Permute2x128(u1, u5, 0x20).StoreUnsafe(ref dst, (nuint)dstStride);
        Avx.Permute2x128(u2, u6, 0x20).StoreUnsafe(ref dst, (nuint)(2 * dstStride));
        Avx.Permute2x128(u3, u7, 0x20).StoreUnsafe(ref dst, (nuint)(3 * dstStride));
        Avx.Permute2x128(u0, u4, 0x31).StoreUnsafe(ref dst, (nuint)(4 * dstStride));
        Avx.Permute2x128(u1, u5, 0x31).StoreUnsafe(ref dst, (nuint)(5 * dstStride));
        Avx.Permute2x128(u2, u6, 0x31).StoreUnsafe(ref dst, (nuint)(6 * dstStride));
        Avx.Permute2x128(u3, u7, 0x31).StoreUnsafe(ref dst, (nuint)(7 * dstStride));
    }

    /// <summary>
    /// dst[c, u] = src[u, c] for 8 rows of 16 columns, in 512-bit registers: the 8×8 tile's unpack and
    /// shuffle steps transpose the 4×4 blocks inside each 128-bit lane, then one two-source
    /// permutation per output register pairs lane L of rows 0–3 with lane L of rows 4–7. Half the
    /// shuffles per element of two 8×8 tiles, which is what a decoding step's packing is made of.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x16(ref float src, int srcStride, ref float dst, int dstStride)
    {
        var r0 = Vector512.LoadUnsafe(ref src);
        var r1 = Vector512.LoadUnsafe(ref src, (nuint)srcStride);
        var r2 = Vector512.LoadUnsafe(ref src, (nuint)(2 * srcStride));
        var r3 = Vector512.LoadUnsafe(ref src, (nuint)(3 * srcStride));
        var r4 = Vector512.LoadUnsafe(ref src, (nuint)(4 * srcStride));
        var r5 = Vector512.LoadUnsafe(ref src, (nuint)(5 * srcStride));
        var r6 = Vector512.LoadUnsafe(ref src, (nuint)(6 * srcStride));
        var r7 = Vector512.LoadUnsafe(ref src, (nuint)(7 * srcStride));

        var t0 = Avx512F.UnpackLow(r0, r1);
        var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3);
        var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5);
        var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7);
        var t7 = Avx512F.UnpackHigh(r6, r7);

        // Lane L of u_c holds rows 0–3 of column 4L + c; lane L of u_(4+c) rows 4–7 of it.
        var u0 = Avx512F.Shuffle(t0, t2, 0x44);
        var u1 = Avx512F.Shuffle(t0, t2, 0xEE);
        var u2 = Avx512F.Shuffle(t1, t3, 0x44);
        var u3 = Avx512F.Shuffle(t1, t3, 0xEE);
        var u4 = Avx512F.Shuffle(t4, t6, 0x44);
        var u5 = Avx512F.Shuffle(t4, t6, 0xEE);
        var u6 = Avx512F.Shuffle(t5, t7, 0x44);
        var u7 = Avx512F.Shuffle(t5, t7, 0xEE);

        // Lanes 0 and 2 of u_c and u_(4+c) make columns c and 8 + c; lanes 1 and 3 columns 4 + c and 12 + c.
        var even = Vector512.Create(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        var odd = Vector512.Create(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        StoreColumns(Avx512F.PermuteVar16x32x2(u0, even, u4), ref dst, 0, 8 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u1, even, u5), ref dst, dstStride, 9 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u2, even, u6), ref dst, 2 * dstStride, 10 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u3, even, u7), ref dst, 3 * dstStride, 11 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u0, odd, u4), ref dst, 4 * dstStride, 12 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u1, odd, u5), ref dst, 5 * dstStride, 13 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u2, odd, u6), ref dst, 6 * dstStride, 14 * dstStride);
        StoreColumns(Avx512F.PermuteVar16x32x2(u3, odd, u7), ref dst, 7 * dstStride, 15 * dstStride);
    }

    /// <summary>The low 8 floats of <paramref name="pair"/> at dst[<paramref name="low"/>], the high 8 at dst[<paramref name="high"/>].</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void StoreColumns(Vector512<float> pair, ref float dst, int low, int high)
    {
        pair.GetLower().StoreUnsafe(ref dst, (nuint)low);
        pair.GetUpper().StoreUnsafe(ref dst, (nuint)high);
    }

    /// <summary>The packed features of one key for the cosine (k/‖k‖) and additive (W_kᵀ k) scores.</summary>
    private static void Features(AttentionProblem p, ScoreFunction score, ReadOnlySpan<float> key, Span<float> feature)
    {
        if (score == ScoreFunction.Additive)
        {
            var wk = p.Options.Additive!.Wk;
            for (int a = 0; a < feature.Length; a++)
            {
                feature[a] = Project(key, wk, a, feature.Length);
            }

            return;
        }

        float inv = AttentionProblem.CosineInverseNorm(key);
        for (int k = 0; k < key.Length; k++)
        {
            feature[k] = key[k] * inv;
        }
    }

    /// <summary>(Wᵀ x)_a = Σ_k x_k W[k, a], in float64 then rounded once.</summary>
    public static float Project(ReadOnlySpan<float> x, float[] w, int a, int da)
    {
        double sum = 0;
        for (int k = 0; k < x.Length; k++)
        {
            sum += (double)x[k] * w[(k * da) + a];
        }

        return (float)sum;
    }
}
