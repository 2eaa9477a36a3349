using System.Numerics.Tensors;
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
    private const int Block = 64;

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
        // Work items of 64 rows; within one, 64 outputs at a time, so the 64 rows of x and 64 rows of
        // W in use (2 × 64 × depth floats) stay in L2 while every 4 × 4 tile of them is computed.
        int blocks = (rows + Block - 1) / Block;
        ParallelWork.Run(blocks, threads, block =>
        {
            int r0 = block * Block;
            int mr = Math.Min(Block, rows - r0);
            for (int c0 = 0; c0 < outDim; c0 += Block)
            {
                int nc = Math.Min(Block, outDim - c0);
                for (int r = r0; r < r0 + mr; r += Tile)
                {
                    for (int c = c0; c < c0 + nc; c += Tile)
                    {
                        if (r + Tile <= r0 + mr && c + Tile <= c0 + nc)
                        {
                            Tile4x4(xp, r, wp, c, padded, y, outDim);
                            continue;
                        }

                        for (int rr = r; rr < Math.Min(r + Tile, r0 + mr); rr++)
                        {
                            for (int cc = c; cc < Math.Min(c + Tile, c0 + nc); cc++)
                            {
                                y[((long)rr * outDim) + cc] = Dot(xp, rr, wp, cc, padded);
                            }
                        }
                    }
                }
            }

            if (b is not null)
            {
                // Element-wise, one rounding each: TensorPrimitives' vector width cannot change a bit.
                for (int r = r0; r < r0 + mr; r++)
                {
                    var row = y.AsSpan((int)((long)r * outDim), outDim);
                    TensorPrimitives.Add(row, b, row);
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

    private static void Tile4x4(float[] x, int r0, float[] w, int c0, int depth, float[] y, int outDim)
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

        long y0 = ((long)r0 * outDim) + c0, y1 = y0 + outDim, y2 = y1 + outDim, y3 = y2 + outDim;
        (y[y0], y[y0 + 1], y[y0 + 2], y[y0 + 3]) = (Across(a00), Across(a01), Across(a02), Across(a03));
        (y[y1], y[y1 + 1], y[y1 + 2], y[y1 + 3]) = (Across(a10), Across(a11), Across(a12), Across(a13));
        (y[y2], y[y2 + 1], y[y2 + 2], y[y2 + 3]) = (Across(a20), Across(a21), Across(a22), Across(a23));
        (y[y3], y[y3 + 1], y[y3 + 2], y[y3 + 3]) = (Across(a30), Across(a31), Across(a32), Across(a33));
    }

    private static float Dot(float[] x, int r, float[] w, int c, int depth)
    {
        ref float xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref float wr = ref MemoryMarshal.GetArrayDataReference(w);
        nint x0 = (nint)r * depth, w0 = (nint)c * depth;
        var acc = Vector512<float>.Zero;
        for (nint k = 0; k < depth; k += 16)
        {
            acc = Vector512.FusedMultiplyAdd(Load(ref xr, x0 + k), Load(ref wr, w0 + k), acc);
        }

        return Across(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Load(ref float source, nint offset) => Vector512.LoadUnsafe(ref source, (nuint)offset);

    /// <summary>
    /// The 16 lanes summed in a fixed pairwise tree: lane t + lane t+8 (t &lt; 8), then t + t+4,
    /// then t + t+2, then 0 + 1 — halves of the vector added, which is the same tree at any width.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Across(Vector512<float> v)
    {
        var half = v.GetLower() + v.GetUpper();
        var quarter = half.GetLower() + half.GetUpper();
        return (quarter.GetElement(0) + quarter.GetElement(2)) + (quarter.GetElement(1) + quarter.GetElement(3));
    }
}
