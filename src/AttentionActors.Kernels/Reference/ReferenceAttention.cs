namespace AttentionActors.Kernels.Reference;

/// <summary>Float64 output <c>[B, H, Nq, Dv]</c> and log-sum-exp <c>[B, H, Nq]</c>.</summary>
public sealed record ReferenceResult(double[] Output, double[] Lse);

/// <summary>
/// Plain float64 attention from the float32 inputs, written straight from the definitions with
/// three passes per row (max, sum, weighted sum). For tests and <c>--verify</c> only: O(Nq·Nk) time.
/// Shares no code with the fast path apart from the option types.
/// </summary>
public static class ReferenceAttention
{
    public static ReferenceResult Compute(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions options, CancellationToken cancellationToken = default)
        => Compute(q, k, v, options, null, cancellationToken);

    /// <summary>The reference with an explicit additive <paramref name="mask"/> (null: none) added to each logit.</summary>
    public static ReferenceResult Compute(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions options, AttentionMask? mask, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(options);
        int bsz = q.Batch, heads = q.Heads, nq = q.Seq, nk = k.Seq, dv = v.Dim;
        var output = new double[(long)bsz * heads * nq * dv];
        var lse = new double[(long)bsz * heads * nq];
        Parallel.For(0, bsz * heads * nq, new ParallelOptions { CancellationToken = cancellationToken }, () => new double[nk], (row, _, scores) =>
        {
            int i = row % nq;
            int h = row / nq % heads;
            int b = row / nq / heads;
            lse[row] = Row(q, k, v, options, b, h, i, output.AsSpan(row * dv, dv), scores, mask);
            return scores;
        }, _ => { });
        return new ReferenceResult(output, lse);
    }

    /// <summary>
    /// One query row (b, h, i): writes its output into <paramref name="output"/> [Dv] and returns
    /// its log-sum-exp. <paramref name="scores"/> is scratch of at least Nk elements.
    /// </summary>
    public static double Row(AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionOptions options, int b, int h, int i, Span<double> output, Span<double> scores, AttentionMask? mask = null)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(options);
        int nq = q.Seq, nk = k.Seq, dk = q.Dim, dv = v.Dim;
        int kvh = h / (q.Heads / k.Heads);
        var s = scores[..nk];
        var qRow = q.Data.Span.Slice((int)q.RowOffset(b, h, i), dk);
        var kd = k.Data.Span;
        var vd = v.Data.Span;
        output.Clear();

        // Pass 1: scores of the visible keys and their maximum.
        double m = double.NegativeInfinity;
        for (int j = 0; j < nk; j++)
        {
            double bias = Bias(mask, b, h, i, j);
            if (!Visible(options, b, i, j, nq, nk) || double.IsNegativeInfinity(bias))
            {
                s[j] = double.NegativeInfinity;
                continue;
            }

            s[j] = Logit(options, qRow, kd.Slice((int)k.RowOffset(b, kvh, j), dk), b, h, q.Heads, i, j, nq, nk) + bias;
            m = Math.Max(m, s[j]);
        }

        if (double.IsNegativeInfinity(m))
        {
            return double.NegativeInfinity;
        }

        // Pass 2: l = Σ_j e^(s_j − m).
        double l = 0;
        for (int j = 0; j < nk; j++)
        {
            if (!double.IsNegativeInfinity(s[j]))
            {
                l += Math.Exp(s[j] - m);
            }
        }

        // Pass 3: out = Σ_j e^(s_j − m) v_j / l.
        for (int j = 0; j < nk; j++)
        {
            if (double.IsNegativeInfinity(s[j]))
            {
                continue;
            }

            double p = Math.Exp(s[j] - m) / l;
            var vRow = vd.Slice((int)v.RowOffset(b, kvh, j), dv);
            for (int c = 0; c < dv; c++)
            {
                output[c] += p * vRow[c];
            }
        }

        return m + Math.Log(l);
    }

    /// <summary>
    /// The full float64 weight row a_ij = e^(s_ij − lse_i) of query row (b, h, i) into
    /// <paramref name="weights"/> [Nk] (0 for masked keys; all 0 when the row sees nothing), its
    /// logits into <paramref name="scores"/> (−∞ where masked), and its log-sum-exp returned.
    /// </summary>
    public static double WeightRow(AttentionTensor q, AttentionTensor k, AttentionOptions options, int b, int h, int i, Span<double> weights, Span<double> scores, AttentionMask? mask = null)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(options);
        int nq = q.Seq, nk = k.Seq, dk = q.Dim;
        int kvh = h / (q.Heads / k.Heads);
        var qRow = q.Data.Span.Slice((int)q.RowOffset(b, h, i), dk);
        double m = double.NegativeInfinity;
        for (int j = 0; j < nk; j++)
        {
            double bias = Bias(mask, b, h, i, j);
            scores[j] = Visible(options, b, i, j, nq, nk) && !double.IsNegativeInfinity(bias) ? Logit(options, qRow, k.Data.Span.Slice((int)k.RowOffset(b, kvh, j), dk), b, h, q.Heads, i, j, nq, nk) + bias : double.NegativeInfinity;
            m = Math.Max(m, scores[j]);
        }

        weights[..nk].Clear();
        if (double.IsNegativeInfinity(m))
        {
            return m;
        }

        double l = 0;
        for (int j = 0; j < nk; j++)
        {
            l += double.IsNegativeInfinity(scores[j]) ? 0 : Math.Exp(scores[j] - m);
        }

        double lse = m + Math.Log(l);
        for (int j = 0; j < nk; j++)
        {
            weights[j] = double.IsNegativeInfinity(scores[j]) ? 0 : Math.Exp(scores[j] - lse);
        }

        return lse;
    }

    /// <summary>
    /// Entropy −Σ_j a_ij ln a_ij of every row [B, H, Nq] (0 for a row that sees nothing) and the
    /// coverage Σ_i a_ij of every key [B, Hkv, Nk] summed over the query heads sharing each key head,
    /// from the full float64 weight matrix.
    /// </summary>
    public static (double[] Entropy, double[] Coverage) Inspect(AttentionTensor q, AttentionTensor k, AttentionOptions options, AttentionMask? mask = null)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        int nq = q.Seq, nk = k.Seq, group = q.Heads / k.Heads;
        var entropy = new double[(long)q.Batch * q.Heads * nq];
        var coverage = new double[(long)q.Batch * k.Heads * nk];
        var weights = new double[nk];
        var scores = new double[nk];
        for (int b = 0; b < q.Batch; b++)
        {
            for (int h = 0; h < q.Heads; h++)
            {
                for (int i = 0; i < nq; i++)
                {
                    WeightRow(q, k, options, b, h, i, weights, scores, mask);
                    double e = 0;
                    long cover = (((long)b * k.Heads) + (h / group)) * nk;
                    for (int j = 0; j < nk; j++)
                    {
                        e -= weights[j] > 0 ? weights[j] * Math.Log(weights[j]) : 0;
                        coverage[cover + j] += weights[j];
                    }

                    entropy[(((long)b * q.Heads) + h) * nq + i] = e;
                }
            }
        }

        return (entropy, coverage);
    }

    /// <summary>M[b, h, i, j] of an explicit mask, 0 without one.</summary>
    private static double Bias(AttentionMask? mask, int b, int h, int i, int j) => mask is null ? 0 : mask.Keys(b, h, i, j, 1)[0];

    private static bool Visible(AttentionOptions o, int b, int i, int j, int nq, int nk)
    {
        if (o.KeyLengths is { } lengths && j >= lengths[b])
        {
            return false;
        }

        if (o.SequenceLengths is { } sequences && (i >= sequences[b].Query || j >= sequences[b].Key))
        {
            return false;
        }

        long diagonal = Diagonal(o, b, i, nq, nk);
        if (o.Causal && j > diagonal)
        {
            return false;
        }

        if (o.Window is { } w)
        {
            if (w.Left >= 0 && j < diagonal - w.Left)
            {
                return false;
            }

            if (w.Right >= 0 && j > diagonal + w.Right)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The key on query i's diagonal: i, or i + (its sequence's, else the tensors') Nk − Nq bottom-right.</summary>
    private static long Diagonal(AttentionOptions o, int b, int i, int nq, int nk)
    {
        if (o.Alignment != DiagonalAlignment.BottomRight)
        {
            return i;
        }

        return o.SequenceLengths is { } sequences ? (long)i + sequences[b].Key - sequences[b].Query : (long)i + nk - nq;
    }

    private static double Logit(AttentionOptions o, ReadOnlySpan<float> q, ReadOnlySpan<float> k, int b, int h, int heads, int i, int j, int nq, int nk)
    {
        double s;
        switch (o.Score)
        {
            case ScoreFunction.Dot:
                s = (o.Scale ?? (1.0 / Math.Sqrt(q.Length))) * Dot(q, k);
                break;
            case ScoreFunction.Cosine:
                s = Dot(q, k) / Math.Max(Math.Sqrt(Dot(q, q)), 1e-8) / Math.Max(Math.Sqrt(Dot(k, k)), 1e-8) / o.Temperature;
                break;
            case ScoreFunction.Gaussian:
                double d2 = 0;
                for (int c = 0; c < q.Length; c++)
                {
                    double d = (double)q[c] - k[c];
                    d2 += d * d;
                }

                s = -d2 / (2.0 * o.Sigma * o.Sigma);
                break;
            default:
                var a = o.Additive!;
                int da = a.AttentionDim;
                s = 0;
                for (int t = 0; t < da; t++)
                {
                    double pre = 0;
                    for (int c = 0; c < q.Length; c++)
                    {
                        pre += ((double)q[c] * a.Wq[(c * da) + t]) + ((double)k[c] * a.Wk[(c * da) + t]);
                    }

                    s += a.V[t] * Math.Tanh(pre);
                }

                break;
        }

        if (o.SoftCap is { } cap)
        {
            s = cap * Math.Tanh(s / cap);
        }

        if (o.AlibiSlope(b, h, heads) is { } slope)
        {
            // ALiBi, centred on the aligned diagonal: −slope·|i + D − j|.
            s -= slope * Math.Abs((double)Diagonal(o, b, i, nq, nk) - j);
        }

        return s;
    }

    private static double Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        double sum = 0;
        for (int c = 0; c < x.Length; c++)
        {
            sum += (double)x[c] * y[c];
        }

        return sum;
    }
}
