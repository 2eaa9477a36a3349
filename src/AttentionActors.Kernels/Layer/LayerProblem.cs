namespace AttentionActors.Kernels;

/// <summary>
/// The inputs of a multi-head layer job, whose Q, K and V are not shipped but projected by each
/// shard's worker: E_q, E_k, E_v input features, whether V has its own input, and which biases exist.
/// The job's geometry still describes the projected heads: Q [B, H, N, E/H], K and V [B, H, Nk, E/H].
/// </summary>
public sealed record LayerShape(int QueryIn, int KeyIn, int ValueIn, bool SeparateValues, bool QueryBias, bool KeyBias, bool ValueBias)
{
    public override string ToString() => $"layer inputs E_q {QueryIn}, E_k {KeyIn}, E_v {ValueIn}";
}

/// <summary>
/// One shard's share of a layer job: its query rows of X <c>[rows, E_q]</c>, the key (and value)
/// input rows of its blocks <c>[keys, E_k]</c> (<c>[keys, E_v]</c>, empty when V is projected from the
/// key input), and its head's rows of W_q, W_k, W_v (<c>[E/H, E_…]</c>) and biases (<c>[E/H]</c> or empty).
/// </summary>
public sealed record LayerRows(
    ReadOnlyMemory<float> X,
    ReadOnlyMemory<float> KeyIn,
    ReadOnlyMemory<float> ValueIn,
    ReadOnlyMemory<float> Wq,
    ReadOnlyMemory<float> Bq,
    ReadOnlyMemory<float> Wk,
    ReadOnlyMemory<float> Bk,
    ReadOnlyMemory<float> Wv,
    ReadOnlyMemory<float> Bv);

/// <summary>
/// A multi-head layer's attention posed on its inputs: X <c>[B, N, E_q]</c>, the key input
/// <c>[B, Nk, E_k]</c>, the value input <c>[B, Nk, E_v]</c> (the key input itself unless given) and
/// the weights. Shards of it carry inputs and one head's weights; the worker projects them with
/// <see cref="Projection.Linear(float[], int, int, float[], int, float[], int, CancellationToken)"/> (whose bits do not depend on how rows are split), so the partials
/// are those of the problem on the projected tensors (<see cref="MultiHeadLayer.Project"/>).
/// </summary>
public sealed class LayerProblem
{
    private LayerProblem(AttentionGeometry geometry, MultiHeadWeights weights, float[] x, float[] keyInput, float[] valueInput)
    {
        Geometry = geometry;
        Weights = weights;
        X = x;
        KeyInput = keyInput;
        ValueInput = valueInput;
    }

    public AttentionGeometry Geometry { get; }

    public MultiHeadWeights Weights { get; }

    public float[] X { get; }

    public float[] KeyInput { get; }

    public float[] ValueInput { get; }

    /// <summary>Checks the shapes against the weights and builds the job; <paramref name="valueInput"/> null projects V from the key input.</summary>
    public static LayerProblem Create(MultiHeadWeights w, int batch, float[] x, int n, float[] keyInput, float[]? valueInput, int nk, AttentionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(keyInput);
        int dh = w.HeadDim;
        var layer = new LayerShape(w.QueryInDim, w.KeyInDim, w.ValueInDim, valueInput is not null, w.Bq is not null, w.Bk is not null, w.Bv is not null);
        var geometry = AttentionGeometry.Create(
            new TensorShape("Q", batch, w.Heads, n, dh),
            new TensorShape("K", batch, w.Heads, nk, dh),
            new TensorShape("V", batch, w.Heads, nk, dh),
            options).WithLayer(layer);
        Check("X", x, (long)batch * n * w.QueryInDim);
        Check("the key input", keyInput, (long)batch * nk * w.KeyInDim);
        if (valueInput is not null)
        {
            Check("the value input", valueInput, (long)batch * nk * w.ValueInDim);
        }
        else if (w.ValueInDim != w.KeyInDim)
        {
            throw new AttentionInputException($"V is projected from the key input of {w.KeyInDim} features, but W_v takes {w.ValueInDim}");
        }

        Check("W_q", w.Wq, (long)w.EmbedDim * w.QueryInDim);
        Check("W_k", w.Wk, (long)w.EmbedDim * w.KeyInDim);
        Check("W_v", w.Wv, (long)w.EmbedDim * w.ValueInDim);
        foreach (var (name, bias) in new[] { ("b_q", w.Bq), ("b_k", w.Bk), ("b_v", w.Bv) })
        {
            if (bias is not null)
            {
                Check(name, bias, w.EmbedDim);
            }
        }

        return new LayerProblem(geometry, w, x, keyInput, valueInput ?? keyInput);
    }

    private static void Check(string name, float[] values, long expected)
    {
        if (values.LongLength != expected)
        {
            throw new AttentionInputException($"{name} holds {values.LongLength} values; the layer's shapes need {expected}");
        }

        int bad = FiniteCheck.FirstNonFinite(values);
        if (bad >= 0)
        {
            throw new AttentionInputException($"{name} holds {values[bad]} at flat index {bad}");
        }
    }
}
