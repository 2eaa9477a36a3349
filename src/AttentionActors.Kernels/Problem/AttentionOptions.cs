namespace AttentionActors.Kernels;

/// <summary>How a query and a key are scored before the softmax.</summary>
public enum ScoreFunction
{
    /// <summary><c>s = scale · q·k</c>, scale 1/√d_k unless set.</summary>
    Dot,

    /// <summary><c>s = (q/‖q‖)·(k/‖k‖) / temperature</c>; a zero vector has cosine 0 (norms floored at 1e-8).</summary>
    Cosine,

    /// <summary>Bahdanau: <c>s = vᵀ tanh(W_qᵀ q + W_kᵀ k)</c>.</summary>
    Additive,

    /// <summary>Nadaraya–Watson: <c>s = −‖q − k‖² / (2σ²)</c>.</summary>
    Gaussian,
}

/// <summary>Where the causal diagonal sits when the query and key lengths differ.</summary>
public enum DiagonalAlignment
{
    /// <summary>Key j is visible to query i when j ≤ i (PyTorch's <c>is_causal</c>).</summary>
    TopLeft,

    /// <summary>Key j is visible to query i when j ≤ i + Nk − Nq (FlashAttention ≥ 2.1).</summary>
    BottomRight,
}

/// <summary>Parameters of additive (Bahdanau) attention.</summary>
/// <param name="Wq">Query projection <c>[d_k, d_a]</c>, row major.</param>
/// <param name="Wk">Key projection <c>[d_k, d_a]</c>, row major.</param>
/// <param name="V">Output vector <c>[d_a]</c>.</param>
public sealed record AdditiveParameters(float[] Wq, float[] Wk, float[] V)
{
    /// <summary>The attention dimension <c>d_a</c>.</summary>
    public int AttentionDim => V.Length;
}

/// <summary>
/// Everything about an attention computation except its tensors. Defaults give plain scaled
/// dot-product attention with no mask.
/// </summary>
public sealed record AttentionOptions
{
    /// <summary>
    /// Default number of keys per canonical block. Each block costs a partial per query row (its
    /// maximum, a pass of exponentials, a merge in the tree) and a call of every tile; 512 keys
    /// share those costs over four times the work of 128. Measured on AMD Zen 4, one thread,
    /// alternating runs: dense N 4096–8192, d 64, 85–88 GFLOP/s at 128 against 90.7–94.4 at 512
    /// (d 128: 90–94 against 93.4–97.3); causal 4–6% quicker; a decoding step from a key/value cache
    /// (Nk 65536, 32 heads over 8, d 128) 69% of the measured memory bandwidth against 76% on one
    /// thread, 86% against 94% on two. Blocks of 1024 were 1–3% quicker again, at twice the
    /// granularity for key splits, causal skipping and short caches. Until 2026-12-07 the default
    /// was 128: outputs computed with the default then are those of <c>BlockSize = 128</c> now.
    /// </summary>
    public const int DefaultBlockSize = 512;

    /// <summary>Score function; default <see cref="ScoreFunction.Dot"/>.</summary>
    public ScoreFunction Score { get; init; } = ScoreFunction.Dot;

    /// <summary>Dot-product scale; default <c>1/√d_k</c>. Any finite value, including 0 and negatives.</summary>
    public float? Scale { get; init; }

    /// <summary>Cosine temperature τ (> 0); default 1.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Gaussian bandwidth σ (> 0); default 1.</summary>
    public float Sigma { get; init; } = 1f;

    /// <summary>Required for <see cref="ScoreFunction.Additive"/>.</summary>
    public AdditiveParameters? Additive { get; init; }

    /// <summary>Logit soft-capping <c>c·tanh(s/c)</c>, applied after the score; off when null.</summary>
    public float? SoftCap { get; init; }

    /// <summary>
    /// ALiBi slopes, one per query head <c>[H]</c> or one per batch and query head <c>[B, H]</c>
    /// (row-major), as FlashAttention's <c>alibi_slopes</c>: the bias <c>−slope·|i + D − j|</c> is
    /// added after soft-capping, D the diagonal offset of <see cref="Alignment"/> (Nk − Nq when
    /// bottom-right, else 0). Keys on either side of the aligned diagonal are penalised by their
    /// distance; under a causal mask this is the causal ALiBi bias, up to a per-row constant.
    /// </summary>
    public float[]? AlibiSlopes { get; init; }

    /// <summary>The ALiBi slope of query head <paramref name="h"/> in batch <paramref name="b"/>, or null without ALiBi.</summary>
    public float? AlibiSlope(int b, int h, int heads)
        => AlibiSlopes is not { } slopes ? null : slopes.Length == heads ? slopes[h] : slopes[(b * heads) + h];

    /// <summary>Causal mask: key j visible to query i only on or below the aligned diagonal.</summary>
    public bool Causal { get; init; }

    /// <summary>
    /// Diagonal alignment for the causal and window masks. Must be set when those masks are used
    /// with Nq ≠ Nk; when null and the lengths are equal, both alignments coincide.
    /// </summary>
    public DiagonalAlignment? Alignment { get; init; }

    /// <summary>
    /// Sliding window (left, right), inclusive, counted from the aligned diagonal; −1 means
    /// unbounded on that side (FlashAttention's <c>window_size</c>). Null: no window.
    /// </summary>
    public (int Left, int Right)? Window { get; init; }

    /// <summary>
    /// Per-batch key lengths: keys j ≥ KeyLengths[b] are padding (PyTorch's <c>key_padding_mask</c>).
    /// A padding mask only: the causal and window diagonal stays the tensors' own. Null: all keys valid.
    /// </summary>
    public int[]? KeyLengths { get; init; }

    /// <summary>
    /// Per-batch sequence lengths, as FlashAttention's <c>flash_attn_varlen_func</c> poses a batch of
    /// sequences of different lengths (padded here to [B, H, N, D]): batch b holds a sequence of
    /// <see cref="SequenceLength.Query"/> query rows and <see cref="SequenceLength.Key"/> keys. Rows
    /// past its query length are padding (output 0, lse −∞, never computed), keys past its key length
    /// are never seen, and its causal mask, window and ALiBi follow its own diagonal: i + D_b = j with
    /// D_b = Key − Query bottom-right, 0 top-left. Null: every batch uses all rows and keys. Not
    /// together with <see cref="KeyLengths"/>.
    /// </summary>
    public SequenceLength[]? SequenceLengths { get; init; }

    /// <summary>
    /// Also compute each row's entropy H_i = lse_i − Σ_j a_ij·s_ij inside the online softmax: the
    /// partials carry t = Σ e^(s−m)·s as one more column beside o, rescaled and merged as o is, and
    /// H = lse − t/l at the end. The output's bits do not change.
    /// </summary>
    public bool Entropy { get; init; }

    /// <summary>Keys per canonical block (multiple of 16, 16..4096); fixes the merge tree and so the output bits.</summary>
    public int BlockSize { get; init; } = DefaultBlockSize;

    /// <summary>
    /// The ALiBi paper's slopes for <paramref name="heads"/> heads (Press et al., and their reference
    /// code): for H a power of two, slope_h = 2^(−8(h+1)/H), h = 0 … H − 1; otherwise the slopes of the
    /// largest power of two P &lt; H, followed by every other slope of 2P (the first H − P of them).
    /// </summary>
    public static float[] DefaultAlibiSlopes(int heads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        static IEnumerable<double> PowerOfTwo(int n) => Enumerable.Range(1, n).Select(k => Math.Pow(2.0, -8.0 * k / n));
        int closest = 1 << (int)Math.Floor(Math.Log2(heads));
        var slopes = PowerOfTwo(closest);
        if (closest < heads)
        {
            slopes = slopes.Concat(PowerOfTwo(2 * closest).Where((_, i) => i % 2 == 0).Take(heads - closest));
        }

        return [.. slopes.Select(x => (float)x)];
    }
}

/// <summary>One sequence of a variable-length batch: its query rows and keys.</summary>
public readonly record struct SequenceLength(int Query, int Key);
