using System.Numerics.Tensors;

namespace AttentionActors.Kernels;

/// <summary>
/// The parameters of a multi-head attention layer in PyTorch's <c>nn.MultiheadAttention</c> /
/// <c>nn.Linear</c> convention (weights [out, in], <c>y = x·Wᵀ + b</c>): W_q [E, E_q], W_k [E, E_k],
/// W_v [E, E_v], W_o [E_out, E], optional biases, and H heads of E/H dims.
/// </summary>
public sealed record MultiHeadWeights(int Heads, float[] Wq, float[] Wk, float[] Wv, float[] Wo, int EmbedDim, int QueryInDim, int KeyInDim, int ValueInDim, int OutDim)
{
    public float[]? Bq { get; init; }

    public float[]? Bk { get; init; }

    public float[]? Bv { get; init; }

    public float[]? Bo { get; init; }

    /// <summary>E / H, the dims of one head; its scores are scaled by 1/√(E/H).</summary>
    public int HeadDim => EmbedDim / Heads;
}

/// <summary>
/// "Attention Is All You Need"'s multi-head attention around the exact attention kernel:
/// <code>
/// Q = X·W_qᵀ + b_q,  K = M_k·W_kᵀ + b_k,  V = M_v·W_vᵀ + b_v      (X [B, N, E_q], M [B, Nk, E_k|E_v])
/// head h: Q_h, K_h, V_h = columns [h·E/H, (h+1)·E/H) of Q, K, V
/// out = concat_h(attention(Q_h, K_h, V_h))·W_oᵀ + b_o              ([B, N, E_out])
/// </code>
/// The projections use <see cref="Projection.Linear(float[], int, int, float[], int, float[], int, CancellationToken)"/>, whose bits do not depend on the machine.
/// </summary>
public static class MultiHeadLayer
{
    /// <summary>Q [B, H, N, E/H], K and V [B, H, Nk, E/H] from the inputs (rows of <paramref name="batch"/> sequences).</summary>
    public static (AttentionTensor Q, AttentionTensor K, AttentionTensor V) Project(MultiHeadWeights w, int batch, float[] x, int n, float[] keyInput, float[] valueInput, int nk, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(w);
        var q = Projection.Linear(x, batch * n, w.QueryInDim, w.Wq, w.EmbedDim, w.Bq, threads, cancellationToken);
        var k = Projection.Linear(keyInput, batch * nk, w.KeyInDim, w.Wk, w.EmbedDim, w.Bk, threads, cancellationToken);
        var v = Projection.Linear(valueInput, batch * nk, w.ValueInDim, w.Wv, w.EmbedDim, w.Bv, threads, cancellationToken);
        return (SplitHeads("Q", q, batch, n, w), SplitHeads("K", k, batch, nk, w), SplitHeads("V", v, batch, nk, w));
    }

    /// <summary>out [B, N, E_out] = concat of the heads of <paramref name="attended"/> [B, H, N, E/H], times W_oᵀ, plus b_o.</summary>
    public static float[] Combine(MultiHeadWeights w, AttentionTensor attended, int threads = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(attended);
        int b = attended.Batch, n = attended.Seq, dh = w.HeadDim;
        var concat = new float[(long)b * n * w.EmbedDim];
        var data = attended.Data.Span;
        for (int bb = 0; bb < b; bb++)
        {
            for (int h = 0; h < w.Heads; h++)
            {
                for (int i = 0; i < n; i++)
                {
                    data.Slice((int)attended.RowOffset(bb, h, i), dh).CopyTo(concat.AsSpan((int)(((((long)bb * n) + i) * w.EmbedDim) + (h * dh)), dh));
                }
            }
        }

        return Projection.Linear(concat, b * n, w.EmbedDim, w.Wo, w.OutDim, w.Bo, threads, cancellationToken);
    }

    /// <summary>
    /// Adds the original Transformer's positional encoding to every sequence of <paramref name="x"/>
    /// [B, N, E] in place: PE[pos, 2i] = sin(pos / 10000^(2i/E)), PE[pos, 2i+1] = cos(pos / 10000^(2i/E)),
    /// computed in float64 and rounded once.
    /// </summary>
    public static void AddSinusoidal(float[] x, int batch, int n, int e)
    {
        ArgumentNullException.ThrowIfNull(x);
        var pe = new float[e];
        for (int pos = 0; pos < n; pos++)
        {
            for (int c = 0; c < e; c++)
            {
                double angle = pos / Math.Pow(10000, 2 * (c / 2) / (double)e);
                pe[c] = (float)(c % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle));
            }

            for (int b = 0; b < batch; b++)
            {
                var row = x.AsSpan((int)((((long)b * n) + pos) * e), e);
                TensorPrimitives.Add(row, pe, row);
            }
        }
    }

    private static AttentionTensor SplitHeads(string name, float[] projected, int batch, int n, MultiHeadWeights w)
    {
        int dh = w.HeadDim;
        var t = AttentionTensor.Zeros(name, batch, w.Heads, n, dh);
        var dst = t.Data.Span;
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < n; i++)
            {
                for (int h = 0; h < w.Heads; h++)
                {
                    projected.AsSpan((int)(((((long)b * n) + i) * w.EmbedDim) + (h * dh)), dh).CopyTo(dst.Slice((int)t.RowOffset(b, h, i), dh));
                }
            }
        }

        return t;
    }
}
