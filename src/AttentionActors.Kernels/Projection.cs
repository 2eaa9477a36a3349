using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace AttentionActors.Kernels;

/// <summary>
/// The linear map of PyTorch's <c>nn.Linear</c>: <c>y = x·Wᵀ + b</c>.
/// <code>
/// x: [n, in] row-major     W: [out, in] row-major     b: [out] or none     y: [n, out]
/// y[r, c] = (Σ_k x[r, k]·W[c, k]) + b[c]
/// </code>
/// Each sum runs in 16 lanes (lane t takes k ≡ t mod 16, ascending k, one fused multiply-add per
/// term) and then a fixed pairwise tree over the lanes; the bias is added last. The 16 lanes are
/// Vector512 arithmetic, which is exact lane by lane wherever it runs (one AVX-512 instruction,
/// two AVX2 ones, or software), so every machine gives the same bits. Register tiles of 4 rows × 4
/// outputs share each loaded vector four ways.
/// </summary>
public static class Projection
{
    private const int Tile = 4;

    /// <summary>y [n, out] = x [n, in]·Wᵀ + b, split over <paramref name="threads"/> threads by row tiles.</summary>
    public static float[] Linear(float[] x, int rows, int inDim, float[] w, int outDim, float[]? b, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(w);
        if (rows < 0 || inDim < 1 || outDim < 1 || x.Length != (long)rows * inDim || w.Length != (long)outDim * inDim || (b is not null && b.Length != outDim))
        {
            throw new ArgumentException($"x holds {x.Length} values, W {w.Length}, b {b?.Length}; [{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ + [{outDim}] needs {(long)rows * inDim}, {(long)outDim * inDim} and {outDim}");
        }

        // Rows padded with zeros to whole vectors: a zero term leaves its lane unchanged.
        int padded = (inDim + 15) & ~15;
        var xp = Pad(x, rows, inDim, padded);
        var wp = Pad(w, outDim, inDim, padded);
        var y = new float[(long)rows * outDim];
        int tiles = (rows + Tile - 1) / Tile;
        ParallelWork.Run(tiles, threads, tile =>
        {
            int r0 = tile * Tile;
            int mr = Math.Min(Tile, rows - r0);
            Span<float> lanes = stackalloc float[16];
            for (int c0 = 0; c0 < outDim; c0 += Tile)
            {
                int nc = Math.Min(Tile, outDim - c0);
                if (mr == Tile && nc == Tile)
                {
                    Tile4x4(xp, r0, wp, c0, padded, y, outDim, lanes);
                }
                else
                {
                    for (int r = 0; r < mr; r++)
                    {
                        for (int c = 0; c < nc; c++)
                        {
                            y[((long)(r0 + r) * outDim) + c0 + c] = Dot(xp, r0 + r, wp, c0 + c, padded, lanes);
                        }
                    }
                }
            }

            if (b is not null)
            {
                for (int r = r0; r < r0 + mr; r++)
                {
                    for (int c = 0; c < outDim; c++)
                    {
                        y[((long)r * outDim) + c] += b[c];
                    }
                }
            }
        }, cancellationToken);
        return y;
    }

    private static float[] Pad(float[] a, int rows, int cols, int padded)
    {
        if (cols == padded)
        {
            return a;
        }

        var p = new float[(long)rows * padded];
        for (int r = 0; r < rows; r++)
        {
            Array.Copy(a, (long)r * cols, p, (long)r * padded, cols);
        }

        return p;
    }

    private static void Tile4x4(float[] x, int r0, float[] w, int c0, int depth, float[] y, int outDim, Span<float> lanes)
    {
        ref float xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref float wr = ref MemoryMarshal.GetArrayDataReference(w);
        nint x0 = (nint)r0 * depth, w0 = (nint)c0 * depth;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        for (nint k = 0; k < depth; k += 16)
        {
            var q0 = Load(ref xr, x0 + k);
            var q1 = Load(ref xr, x0 + depth + k);
            var q2 = Load(ref xr, x0 + (2 * depth) + k);
            var q3 = Load(ref xr, x0 + (3 * depth) + k);
            var k0 = Load(ref wr, w0 + k);
            var k1 = Load(ref wr, w0 + depth + k);
            var k2 = Load(ref wr, w0 + (2 * depth) + k);
            var k3 = Load(ref wr, w0 + (3 * depth) + k);
            a00 = Vector512.FusedMultiplyAdd(q0, k0, a00);
            a01 = Vector512.FusedMultiplyAdd(q0, k1, a01);
            a02 = Vector512.FusedMultiplyAdd(q0, k2, a02);
            a03 = Vector512.FusedMultiplyAdd(q0, k3, a03);
            a10 = Vector512.FusedMultiplyAdd(q1, k0, a10);
            a11 = Vector512.FusedMultiplyAdd(q1, k1, a11);
            a12 = Vector512.FusedMultiplyAdd(q1, k2, a12);
            a13 = Vector512.FusedMultiplyAdd(q1, k3, a13);
            a20 = Vector512.FusedMultiplyAdd(q2, k0, a20);
            a21 = Vector512.FusedMultiplyAdd(q2, k1, a21);
            a22 = Vector512.FusedMultiplyAdd(q2, k2, a22);
            a23 = Vector512.FusedMultiplyAdd(q2, k3, a23);
            a30 = Vector512.FusedMultiplyAdd(q3, k0, a30);
            a31 = Vector512.FusedMultiplyAdd(q3, k1, a31);
            a32 = Vector512.FusedMultiplyAdd(q3, k2, a32);
            a33 = Vector512.FusedMultiplyAdd(q3, k3, a33);
        }

        long y0 = ((long)r0 * outDim) + c0;
        ReadOnlySpan<Vector512<float>> sums = [a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33];
        for (int i = 0; i < 16; i++)
        {
            y[y0 + ((i / 4) * outDim) + (i % 4)] = Across(sums[i], lanes);
        }
    }

    private static float Dot(float[] x, int r, float[] w, int c, int depth, Span<float> lanes)
    {
        ref float xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref float wr = ref MemoryMarshal.GetArrayDataReference(w);
        nint x0 = (nint)r * depth, w0 = (nint)c * depth;
        var acc = Vector512<float>.Zero;
        for (nint k = 0; k < depth; k += 16)
        {
            acc = Vector512.FusedMultiplyAdd(Load(ref xr, x0 + k), Load(ref wr, w0 + k), acc);
        }

        return Across(acc, lanes);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load(ref float source, nint offset) => Vector512.LoadUnsafe(ref source, (nuint)offset);

    /// <summary>The 16 lanes summed in a fixed pairwise tree: (0+8, 1+9, …), then halves again.</summary>
    private static float Across(Vector512<float> v, Span<float> lanes)
    {
        v.CopyTo(lanes);
        for (int half = 8; half >= 1; half >>= 1)
        {
            for (int t = 0; t < half; t++)
            {
                lanes[t] += lanes[t + half];
            }
        }

        return lanes[0];
    }
}
