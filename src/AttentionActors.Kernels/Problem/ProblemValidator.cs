using System.Globalization;
using System.Numerics;

namespace AttentionActors.Kernels;

/// <summary>The checks behind <see cref="AttentionGeometry.Create"/> and the problem factories; each failure names what is wrong.</summary>
internal static class ProblemValidator
{
    public static void CheckShapes(TensorShape q, TensorShape k, TensorShape v)
    {
        foreach (var t in new[] { q, k, v })
        {
            if (t.Batch < 1 || t.Heads < 1 || t.Dim < 1)
            {
                throw Fail($"{t}: batch, heads and dim must be at least 1");
            }
        }

        if (k.Batch != q.Batch || v.Batch != q.Batch)
        {
            throw Fail($"batch sizes differ: {q}, {k}, {v}");
        }

        if (k.Heads != v.Heads)
        {
            throw Fail($"K has {k.Heads} heads but V has {v.Heads}: {k}, {v}");
        }

        if (q.Heads % k.Heads != 0)
        {
            throw Fail($"Q's {q.Heads} heads are not a multiple of K/V's {k.Heads} heads (grouped-query attention needs H_q = g·H_kv)");
        }

        if (k.Seq != v.Seq)
        {
            throw Fail($"K has {k.Seq} keys but V has {v.Seq} values: {k}, {v}");
        }

        if (q.Dim != k.Dim)
        {
            throw Fail($"Q's dim {q.Dim} differs from K's dim {k.Dim}: {q}, {k}");
        }
    }

    /// <summary>Throws unless <paramref name="blockSize"/> is a block size the kernels take: a multiple of 16 from 16 to 4096.</summary>
    public static void CheckBlockSize(int blockSize)
    {
        if (blockSize < 16 || blockSize > 4096 || blockSize % 16 != 0)
        {
            throw Fail($"block size {blockSize} must be a multiple of 16 between 16 and 4096");
        }
    }

    public static void CheckOptions(TensorShape q, TensorShape k, AttentionOptions o)
    {
        CheckBlockSize(o.BlockSize);

        if (o.Scale is { } scale && !float.IsFinite(scale))
        {
            throw Fail($"scale {Show(scale)} is not finite");
        }

        RequirePositive("temperature", o.Temperature);
        RequirePositive("sigma", o.Sigma);
        if (o.SoftCap is { } cap)
        {
            RequirePositive("soft-cap", cap);
        }

        if (o.AlibiSlopes is { } slopes)
        {
            if (slopes.Length != q.Heads && slopes.Length != (long)q.Batch * q.Heads)
            {
                throw Fail($"ALiBi has {slopes.Length} slopes; Q's {q.Heads} heads need [{q.Heads}] or, per batch, [{q.Batch}, {q.Heads}] = {(long)q.Batch * q.Heads}");
            }

            RequireFinite("ALiBi slopes", slopes);

            // The bias uses j − i − D as a float32, exact only below 2^24.
            if (Math.Max(q.Seq, k.Seq) > 1 << 23)
            {
                throw Fail($"ALiBi needs sequence lengths up to 2^23 = 8,388,608; got Nq = {q.Seq}, Nk = {k.Seq}");
            }

            if (q.Seq != k.Seq && o.Alignment is null && o.SequenceLengths is null)
            {
                throw Fail($"ALiBi with Nq = {q.Seq} ≠ Nk = {k.Seq} needs an explicit alignment (top-left or bottom-right): its bias −slope·|i + D − j| is centred on the aligned diagonal");
            }
        }

        if (o.KeyLengths is { } lengths)
        {
            if (lengths.Length != q.Batch)
            {
                throw Fail($"{lengths.Length} key lengths given for a batch of {q.Batch}");
            }

            for (int b = 0; b < lengths.Length; b++)
            {
                if (lengths[b] < 0 || lengths[b] > k.Seq)
                {
                    throw Fail($"key length {lengths[b]} of batch {b} is outside [0, {k.Seq}] (K has {k.Seq} keys)");
                }
            }
        }

        if (o.Window is { } window && (window.Left < -1 || window.Right < -1))
        {
            throw Fail($"window ({window.Left}, {window.Right}) must have sides ≥ 0, or −1 for unbounded");
        }

        if (o.SequenceLengths is { } sequences)
        {
            if (o.KeyLengths is not null)
            {
                throw Fail("give key lengths (a padding mask) or sequence lengths (variable-length sequences, each with its own diagonal), not both");
            }

            if (sequences.Length != q.Batch)
            {
                throw Fail($"{sequences.Length} sequence lengths given for a batch of {q.Batch}");
            }

            for (int b = 0; b < sequences.Length; b++)
            {
                var (nq, nk) = sequences[b];
                if (nq < 0 || nq > q.Seq || nk < 0 || nk > k.Seq)
                {
                    throw Fail($"sequence {b} of {nq} queries and {nk} keys is outside the tensors' [0, {q.Seq}] queries and [0, {k.Seq}] keys");
                }

                if ((o.Causal || o.Window is not null || o.AlibiSlopes is not null) && nq != nk && o.Alignment is null)
                {
                    throw Fail($"sequence {b} has {nq} queries ≠ {nk} keys: its {(o.Causal ? "causal mask" : o.Window is not null ? "window" : "ALiBi bias")} needs an explicit alignment (top-left or bottom-right, FlashAttention's varlen convention)");
                }
            }
        }
        else if ((o.Causal || o.Window is not null) && q.Seq != k.Seq && o.Alignment is null)
        {
            throw Fail($"a {(o.Causal ? "causal" : "window")} mask with Nq = {q.Seq} ≠ Nk = {k.Seq} needs an explicit alignment (top-left or bottom-right)");
        }

        if (o.Score == ScoreFunction.Additive)
        {
            CheckAdditive(q.Dim, o.Additive);
        }
        else if (o.Additive is not null)
        {
            throw Fail($"additive parameters were given but the score function is {o.Score}");
        }
    }

    private static void CheckAdditive(int dk, AdditiveParameters? p)
    {
        if (p is null)
        {
            throw Fail("additive attention needs W_q [d_k, d_a], W_k [d_k, d_a] and v [d_a]");
        }

        int da = p.V.Length;
        if (da < 1)
        {
            throw Fail("additive attention needs d_a ≥ 1 (v is empty)");
        }

        if (p.Wq.Length != dk * da || p.Wk.Length != dk * da)
        {
            throw Fail($"additive W_q has {p.Wq.Length} and W_k {p.Wk.Length} elements; [d_k = {dk}, d_a = {da}] needs {dk * da}");
        }

        RequireFinite("additive W_q", p.Wq);
        RequireFinite("additive W_k", p.Wk);
        RequireFinite("additive v", p.V);
    }

    public static void CheckValues(AttentionProblem p)
    {
        double qNorm = MaxRowNorm(p.Q, out _);
        double kNorm = MaxRowNorm(p.K, out _);
        MaxRowNorm(p.V, out double vAbs);
        CheckBounds(p, qNorm, kNorm, vAbs);
    }

    /// <summary>
    /// Throws unless no score, logit or weighted sum of <paramref name="p"/> can overflow, given the
    /// largest row norms of Q and K and the largest magnitude in V.
    /// </summary>
    public static void CheckBounds(AttentionProblem p, double qNorm, double kNorm, double vAbs)
    {
        var o = p.Options;
        double raw;
        double logit;
        switch (o.Score)
        {
            case ScoreFunction.Dot:
                raw = qNorm * kNorm;
                logit = Math.Abs((double)p.Scale) * raw;
                break;
            case ScoreFunction.Cosine:
                raw = 1;
                logit = 1.0 / o.Temperature;
                break;
            case ScoreFunction.Gaussian:
                raw = (qNorm + kNorm) * (qNorm + kNorm);
                logit = raw / (2.0 * o.Sigma * o.Sigma);
                break;
            default:
                var a = o.Additive!;
                raw = (qNorm * MaxColumnNorm(a.Wq, a.AttentionDim)) + (kNorm * MaxColumnNorm(a.Wk, a.AttentionDim));
                logit = a.V.Sum(x => Math.Abs((double)x));
                break;
        }

        if (raw > AttentionProblem.MaxSum)
        {
            throw Fail($"{o.Score} scores could overflow float32: their inner sums reach {raw:G3} (max row norms ‖Q‖ {qNorm:G3}, ‖K‖ {kNorm:G3}); rescale Q or K");
        }

        if (o.SoftCap is { } cap)
        {
            logit = Math.Min(logit, cap);
        }

        if (o.AlibiSlopes is { } slopes && slopes.Length > 0)
        {
            logit += slopes.Max(s => Math.Abs((double)s)) * Math.Max(p.QuerySeq, p.KeySeq);
        }

        if (logit > AttentionProblem.MaxLogit)
        {
            throw Fail($"logits could reach {logit:G3}, beyond the ±{AttentionProblem.MaxLogit:G1} this engine accepts; lower the scale or rescale Q or K");
        }

        if (vAbs * Math.Max(p.KeySeq, 1) > AttentionProblem.MaxSum)
        {
            throw Fail($"V's largest magnitude {vAbs:G3} times {p.KeySeq} keys could overflow the float32 weighted sum; rescale V");
        }
    }

    /// <summary>
    /// Largest row L2 norm, and largest magnitude; throws on the first NaN or ±Inf. Rows are
    /// summed in float32 SIMD lanes (these bounds are orders of magnitude, so the rounding cannot
    /// change a decision); a row whose sum is not finite — a NaN or ±Inf in it, or squares beyond
    /// float32 — is redone exactly in float64, which finds and names the culprit. Workers run this
    /// on every shard they receive, so it must cost little next to the shard's compute.
    /// </summary>
    internal static double MaxRowNorm(AttentionTensor t, out double maxAbs)
    {
        if (!t.IsSegmented)
        {
            return t.Length >= ParallelValues ? ParallelMaxRowNorm(t, out maxAbs) : MaxRowNorm(t, t.Data.Span, 0, out maxAbs);
        }

        // A segmented tensor is checked plane by plane; the largest norm of all rows is the largest of the planes'.
        double norm = 0;
        maxAbs = 0;
        for (int b = 0; b < t.Batch; b++)
        {
            for (int h = 0; h < t.Heads; h++)
            {
                norm = Math.Max(norm, MaxRowNorm(t, t.Rows(b, h, 0, t.Seq).Span, (((long)b * t.Heads) + h) * t.Seq * t.Dim, out double planeAbs));
                maxAbs = Math.Max(maxAbs, planeAbs);
            }
        }

        return norm;
    }

    /// <summary>
    /// Values from which a whole tensor is checked on every core, in chunks of whole rows: a tensor
    /// this large is a job's input (a decoding step's cache of keys, say), not a shard of the default
    /// budget, and one thread read it at about half the speed two do (a 1 GiB K took 60 ms).
    /// </summary>
    internal const long ParallelValues = 1L << 24;

    /// <summary>
    /// <see cref="MaxRowNorm(AttentionTensor, out double)"/> of a whole tensor on every core. The
    /// maxima do not depend on the order; a chunk that throws is kept, and the earliest chunk's
    /// error is the one reported, so it names the first NaN or ±Inf as the serial scan does.
    /// </summary>
    private static double ParallelMaxRowNorm(AttentionTensor t, out double maxAbs)
    {
        long rows = t.Length / t.Dim;
        long rowsPerChunk = Math.Max(1, (1L << 20) / t.Dim);
        int chunks = (int)((rows + rowsPerChunk - 1) / rowsPerChunk);
        var norms = new double[chunks];
        var magnitudes = new double[chunks];
        var failures = new AttentionInputException?[chunks];
        var data = t.Data;
        Parallel.For(0, chunks, c =>
        {
            long first = c * rowsPerChunk, count = Math.Min(rowsPerChunk, rows - first);
            try
            {
                norms[c] = MaxRowNorm(t, data.Span.Slice((int)(first * t.Dim), (int)(count * t.Dim)), first * t.Dim, out magnitudes[c]);
            }
            catch (AttentionInputException ex)
            {
                failures[c] = ex;
            }
        });

        if (Array.Find(failures, f => f is not null) is { } failure)
        {
            throw failure;
        }

        maxAbs = magnitudes.Max();
        return norms.Max();
    }

    /// <summary><see cref="MaxRowNorm(AttentionTensor, out double)"/> over <paramref name="data"/>, which starts at element <paramref name="origin"/> of <paramref name="t"/>.</summary>
    private static double MaxRowNorm(AttentionTensor t, ReadOnlySpan<float> data, long origin, out double maxAbs)
    {
        double maxNorm = 0;
        maxAbs = 0;
        int dim = t.Dim;
        int width = Vector<float>.Count;
        for (long row = 0; row < data.Length; row += dim)
        {
            var span = data.Slice((int)row, dim);
            var squares = Vector<float>.Zero;
            var magnitude = Vector<float>.Zero;
            int c = 0;
            for (; c <= dim - width; c += width)
            {
                var x = new Vector<float>(span.Slice(c, width));
                squares += x * x;
                magnitude = Vector.Max(magnitude, Vector.Abs(x));
            }

            float sum = Vector.Sum(squares);
            float largest = 0;
            for (int lane = 0; lane < width; lane++)
            {
                largest = Math.Max(largest, magnitude[lane]);
            }

            for (; c < dim; c++)
            {
                sum += span[c] * span[c];
                largest = Math.Max(largest, Math.Abs(span[c]));
            }

            if (!float.IsFinite(sum))
            {
                double exact = ExactRowSquares(t, origin + row, span, out double rowAbs);
                maxNorm = Math.Max(maxNorm, exact);
                maxAbs = Math.Max(maxAbs, rowAbs);
                continue;
            }

            maxNorm = Math.Max(maxNorm, sum);
            maxAbs = Math.Max(maxAbs, largest);
        }

        return Math.Sqrt(maxNorm);
    }

    /// <summary>One row's sum of squares in float64, and its largest magnitude; throws naming the first NaN or ±Inf.</summary>
    private static double ExactRowSquares(AttentionTensor t, long row, ReadOnlySpan<float> span, out double maxAbs)
    {
        double sum = 0;
        maxAbs = 0;
        for (int c = 0; c < span.Length; c++)
        {
            float x = span[c];
            if (!float.IsFinite(x))
            {
                throw Fail($"{t.DescribeIndex(row + c)} is {Show(x)}; inputs must be finite");
            }

            double ax = Math.Abs((double)x);
            maxAbs = Math.Max(maxAbs, ax);
            sum += ax * ax;
        }

        return sum;
    }

    private static double MaxColumnNorm(float[] w, int columns)
    {
        double max = 0;
        for (int c = 0; c < columns; c++)
        {
            double sum = 0;
            for (int r = c; r < w.Length; r += columns)
            {
                sum += (double)w[r] * w[r];
            }

            max = Math.Max(max, sum);
        }

        return Math.Sqrt(max);
    }

    private static void RequirePositive(string what, float value)
    {
        if (!float.IsFinite(value) || value <= 0)
        {
            throw Fail($"{what} {Show(value)} must be finite and > 0");
        }
    }

    private static void RequireFinite(string what, float[] values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                throw Fail($"{what}[{i}] is {Show(values[i])}; parameters must be finite");
            }
        }
    }

    private static string Show(float x) => x.ToString("R", CultureInfo.InvariantCulture);

    private static AttentionInputException Fail(string message) => new(message);
}
