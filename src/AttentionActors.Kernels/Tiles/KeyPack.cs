namespace AttentionActors.Kernels.Tiles;

/// <summary>
/// The keys of one (batch, kv-head) over blocks [BlockStart, BlockEnd), transposed once so every
/// query panel shares them. Block kb sits at <c>(kb − BlockStart)·depth·Bp</c> as a
/// <c>[depth, bp(kb)]</c> matrix, bp(kb) = the block's key count rounded up to 16, zero padded.
/// Features: the key itself (dot, Gaussian), the key over its norm (cosine), or W_kᵀ k (additive).
/// </summary>
internal sealed class KeyPack
{
    private KeyPack(float[] data, int blockStart, int blockEnd, int depth, int stride)
    {
        Data = data;
        BlockStart = blockStart;
        BlockEnd = blockEnd;
        Depth = depth;
        BlockStride = stride;
    }

    public float[] Data { get; }

    public int BlockStart { get; }

    public int BlockEnd { get; }

    public int Depth { get; }

    public int BlockStride { get; }

    public static int FeatureDepth(AttentionProblem p) => p.Options.Score == ScoreFunction.Additive ? p.Options.Additive!.AttentionDim : p.KeyDim;

    public int Offset(int kb) => (kb - BlockStart) * BlockStride;

    public static KeyPack Create(AttentionProblem p, int b, int kvh, int blockStart, int blockEnd)
    {
        int depth = FeatureDepth(p);
        int bpFull = (p.BlockSize + 15) & ~15;
        int stride = depth * bpFull;
        var data = new float[Math.Max(0, blockEnd - blockStart) * (long)stride];
        var kData = p.K.Data.Span;
        int dk = p.KeyDim;
        var score = p.Options.Score;
        var feature = new float[depth];
        for (int kb = blockStart; kb < blockEnd; kb++)
        {
            int j0 = kb * p.BlockSize;
            int n = Math.Min(p.BlockSize, p.KeySeq - j0);
            int bp = (n + 15) & ~15;
            var kt = data.AsSpan((kb - blockStart) * stride, depth * bp);
            for (int jj = 0; jj < n; jj++)
            {
                var key = kData.Slice((int)p.K.RowOffset(b, kvh, j0 + jj), dk);
                Features(p, score, key, feature);
                for (int k = 0; k < depth; k++)
                {
                    kt[(k * bp) + jj] = feature[k];
                }
            }
        }

        return new KeyPack(data, blockStart, blockEnd, depth, stride);
    }

    private static void Features(AttentionProblem p, ScoreFunction score, ReadOnlySpan<float> key, Span<float> feature)
    {
        if (score == ScoreFunction.Additive)
        {
            var wk = p.Options.Additive!.Wk;
            for (int a = 0; a < feature.Length; a++)
            {
                feature[a] = Project(key, wk, a, feature.Length);
            }
        }
        else if (score == ScoreFunction.Cosine)
        {
            float inv = AttentionProblem.CosineInverseNorm(key);
            for (int k = 0; k < key.Length; k++)
            {
                feature[k] = key[k] * inv;
            }
        }
        else
        {
            key.CopyTo(feature);
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
