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
/// Each sum is one chain of fused multiply-adds in ascending k — <c>acc = fma(x[r, k], W[c, k], acc)</c>
/// from acc = 0 — and the bias is added last. Vectors run across outputs, never across k, so a
/// lane is one output's chain and every vector width (and scalar code) gives the same bits.
/// The kernel is a GEMM's: W is packed once into panels of 32 outputs <c>[in][32]</c>; a register
/// tile of 8 rows × 32 outputs (16 accumulators) broadcasts one x value per row and loads two
/// vectors of W per k, so each loaded value serves 8 fused multiply-adds.
/// </summary>
public static class Projection
{
    /// <summary>Outputs per packed panel: two 16-float vectors.</summary>
    private const int Panel = 32;

    /// <summary>Rows per register tile.</summary>
    private const int Rows = 8;

    /// <summary>Rows per work item: a work item reuses each panel (in × 32 floats, in L2) for its row tiles.</summary>
    private const int Block = 64;

    /// <summary>y [n, out] = x [n, in]·Wᵀ + b, split over <paramref name="threads"/> threads by row blocks.</summary>
    public static float[] Linear(float[] x, int rows, int inDim, float[] w, int outDim, float[]? b, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(w);
        if (rows < 0 || inDim < 1 || outDim < 1 || x.Length != (long)rows * inDim || w.Length != (long)outDim * inDim || (b is not null && b.Length != outDim))
        {
            throw new ArgumentException($"x holds {x.Length} values, W {w.Length}, b {b?.Length}; [{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ + [{outDim}] needs {(long)rows * inDim}, {(long)outDim * inDim} and {outDim}");
        }

        return Linear(x, rows, Pack(w, outDim, inDim), b, threads, cancellationToken);
    }

    /// <summary>
    /// <see cref="Linear(float[], int, int, float[], int, float[], int, CancellationToken)"/> with W
    /// packed beforehand (<see cref="Pack"/>), for many calls with the same weights: packing scatters
    /// every weight once, which for a head's [64, 1024] rows costs about as much as projecting one
    /// 128-key block. The same bits.
    /// </summary>
    public static float[] Linear(float[] x, int rows, PackedWeights w, float[]? b, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(w);
        int inDim = w.InDim, outDim = w.OutDim;
        if (rows < 0 || x.Length != (long)rows * inDim || (b is not null && b.Length != outDim))
        {
            throw new ArgumentException($"x holds {x.Length} values, b {b?.Length}; [{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ + [{outDim}] needs {(long)rows * inDim} and {outDim}");
        }

        var packed = w.Data;
        int panels = (outDim + Panel - 1) / Panel;
        var y = new float[(long)rows * outDim];
        int blocks = (rows + Block - 1) / Block;
        ParallelWork.Run(blocks, threads, block =>
        {
            int r0 = block * Block;
            int end = Math.Min(rows, r0 + Block);
            Span<float> edge = stackalloc float[Rows * Panel];
            for (int p = 0; p < panels; p++)
            {
                int c0 = p * Panel, nc = Math.Min(Panel, outDim - c0);
                int r = r0;
                for (; r + Rows <= end; r += Rows)
                {
                    if (nc == Panel)
                    {
                        Tile(x, r, inDim, packed, p, y.AsSpan((int)(((long)r * outDim) + c0)), outDim);
                    }
                    else
                    {
                        // The last panel's outputs past outDim are zero-padded: computed into a scratch tile, then the real ones copied.
                        Tile(x, r, inDim, packed, p, edge, Panel);
                        for (int i = 0; i < Rows; i++)
                        {
                            edge.Slice(i * Panel, nc).CopyTo(y.AsSpan((int)(((long)(r + i) * outDim) + c0), nc));
                        }
                    }
                }

                for (; r < end; r++)
                {
                    Row(x, r, inDim, packed, p, edge);
                    edge[..nc].CopyTo(y.AsSpan((int)(((long)r * outDim) + c0), nc));
                }
            }

            if (b is not null)
            {
                // Element-wise, one rounding each: TensorPrimitives' vector width cannot change a bit.
                for (int r = r0; r < end; r++)
                {
                    var row = y.AsSpan((int)((long)r * outDim), outDim);
                    TensorPrimitives.Add(row, b, row);
                }
            }
        }, cancellationToken);
        return y;
    }

    /// <summary>W [out, in] as panels [out / 32][in][32], the outputs past <paramref name="outDim"/> zero.</summary>
    public static PackedWeights Pack(float[] w, int outDim, int inDim)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (inDim < 1 || outDim < 1 || w.Length != (long)outDim * inDim)
        {
            throw new ArgumentException($"W holds {w.Length} values; [{outDim}, {inDim}] needs {(long)outDim * inDim}");
        }

        int panels = (outDim + Panel - 1) / Panel;
        var packed = new float[(long)panels * inDim * Panel];
        for (int c = 0; c < outDim; c++)
        {
            long panel = (long)(c / Panel) * inDim * Panel, lane = c % Panel;
            var row = w.AsSpan((int)((long)c * inDim), inDim);
            for (int k = 0; k < inDim; k++)
            {
                packed[panel + ((long)k * Panel) + lane] = row[k];
            }
        }

        return new PackedWeights(packed, outDim, inDim);
    }

    /// <summary>Rows [r, r + 8) × the 32 outputs of panel <paramref name="panel"/>, stored at <paramref name="y"/> with row stride <paramref name="stride"/>.</summary>
    private static void Tile(float[] x, int r, int depth, float[] packed, int panel, Span<float> y, int stride)
    {
        ref float xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref float pr = ref MemoryMarshal.GetArrayDataReference(packed);
        nint x0 = (nint)r * depth, p0 = (nint)panel * depth * Panel;
        nint x1 = x0 + depth, x2 = x1 + depth, x3 = x2 + depth, x4 = x3 + depth, x5 = x4 + depth, x6 = x5 + depth, x7 = x6 + depth;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (nint k = 0; k < depth; k++)
        {
            // acc = fma(x[r, k], W[c, k], acc) for 8 rows × 32 outputs.
            var w0 = Vector512.LoadUnsafe(ref pr, (nuint)(p0 + (k * Panel)));
            var w1 = Vector512.LoadUnsafe(ref pr, (nuint)(p0 + (k * Panel) + 16));
            var a = Vector512.Create(Unsafe.Add(ref xr, x0 + k));
            c00 = Vector512.FusedMultiplyAdd(a, w0, c00);
            c01 = Vector512.FusedMultiplyAdd(a, w1, c01);
            a = Vector512.Create(Unsafe.Add(ref xr, x1 + k));
            c10 = Vector512.FusedMultiplyAdd(a, w0, c10);
            c11 = Vector512.FusedMultiplyAdd(a, w1, c11);
            a = Vector512.Create(Unsafe.Add(ref xr, x2 + k));
            c20 = Vector512.FusedMultiplyAdd(a, w0, c20);
            c21 = Vector512.FusedMultiplyAdd(a, w1, c21);
            a = Vector512.Create(Unsafe.Add(ref xr, x3 + k));
            c30 = Vector512.FusedMultiplyAdd(a, w0, c30);
            c31 = Vector512.FusedMultiplyAdd(a, w1, c31);
            a = Vector512.Create(Unsafe.Add(ref xr, x4 + k));
            c40 = Vector512.FusedMultiplyAdd(a, w0, c40);
            c41 = Vector512.FusedMultiplyAdd(a, w1, c41);
            a = Vector512.Create(Unsafe.Add(ref xr, x5 + k));
            c50 = Vector512.FusedMultiplyAdd(a, w0, c50);
            c51 = Vector512.FusedMultiplyAdd(a, w1, c51);
            a = Vector512.Create(Unsafe.Add(ref xr, x6 + k));
            c60 = Vector512.FusedMultiplyAdd(a, w0, c60);
            c61 = Vector512.FusedMultiplyAdd(a, w1, c61);
            a = Vector512.Create(Unsafe.Add(ref xr, x7 + k));
            c70 = Vector512.FusedMultiplyAdd(a, w0, c70);
            c71 = Vector512.FusedMultiplyAdd(a, w1, c71);
        }

        ref float yr = ref MemoryMarshal.GetReference(y);
        Store(ref yr, 0, c00, c01);
        Store(ref yr, stride, c10, c11);
        Store(ref yr, 2 * stride, c20, c21);
        Store(ref yr, 3 * stride, c30, c31);
        Store(ref yr, 4 * stride, c40, c41);
        Store(ref yr, 5 * stride, c50, c51);
        Store(ref yr, 6 * stride, c60, c61);
        Store(ref yr, 7 * stride, c70, c71);
    }

    /// <summary>Row <paramref name="r"/> × the 32 outputs of panel <paramref name="panel"/> into <paramref name="y"/>[0, 32): the rows left over after whole tiles.</summary>
    private static void Row(float[] x, int r, int depth, float[] packed, int panel, Span<float> y)
    {
        ref float xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref float pr = ref MemoryMarshal.GetArrayDataReference(packed);
        nint x0 = (nint)r * depth, p0 = (nint)panel * depth * Panel;
        Vector512<float> c0 = default, c1 = default;
        for (nint k = 0; k < depth; k++)
        {
            var a = Vector512.Create(Unsafe.Add(ref xr, x0 + k));
            c0 = Vector512.FusedMultiplyAdd(a, Vector512.LoadUnsafe(ref pr, (nuint)(p0 + (k * Panel))), c0);
            c1 = Vector512.FusedMultiplyAdd(a, Vector512.LoadUnsafe(ref pr, (nuint)(p0 + (k * Panel) + 16)), c1);
        }

        Store(ref MemoryMarshal.GetReference(y), 0, c0, c1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ref float y, nint offset, Vector512<float> low, Vector512<float> high)
    {
        low.StoreUnsafe(ref y, (nuint)offset);
        high.StoreUnsafe(ref y, (nuint)(offset + 16));
    }
}

/// <summary>A weight matrix [<see cref="OutDim"/>, <see cref="InDim"/>] packed for <see cref="Projection.Linear(float[], int, PackedWeights, float[], int, CancellationToken)"/>.</summary>
public sealed class PackedWeights
{
    internal PackedWeights(float[] data, int outDim, int inDim) => (Data, OutDim, InDim) = (data, outDim, inDim);

    public int OutDim { get; }

    public int InDim { get; }

    internal float[] Data { get; }
}
