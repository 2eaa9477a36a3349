using AttentionActors.Cli.Npy;
using AttentionActors.Kernels.Tests;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention mha` against a float64 multi-head attention layer written from the definition.</summary>
public sealed class MhaCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-mha-").FullName;
    private readonly Random rng = new(17);

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    private float[] Save(string name, float scale, params int[] shape)
    {
        var data = Enumerable.Range(0, shape.Aggregate(1, (a, b) => a * b)).Select(_ => TestData.Gaussian(rng) * scale).ToArray();
        NpyFile.Write(PathOf(name), data, shape);
        return data;
    }

    /// <summary>y [rows, out] = x·Wᵀ + b in float64.</summary>
    private static double[] Linear(double[] x, int rows, int inDim, float[] w, int outDim, float[]? b)
    {
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < outDim; c++)
            {
                double s = b?[c] ?? 0;
                for (int k = 0; k < inDim; k++)
                {
                    s += x[(r * inDim) + k] * w[(c * inDim) + k];
                }

                y[(r * outDim) + c] = s;
            }
        }

        return y;
    }

    /// <summary>The layer in float64: out [B·N, E_out] and the head-averaged weights [B·N, Nk].</summary>
    private static (double[] Out, double[] AvgWeights) Reference(float[] x, float[] mk, float[] mv, int batch, int n, int nk, int eq, int ek, int ev, int e, int heads, int eOut,
        float[] wq, float[] wk, float[] wv, float[] wo, float[]? bq, float[]? bk, float[]? bv, float[]? bo, bool causal, int[]? keyLengths)
    {
        var q = Linear([.. x.Select(f => (double)f)], batch * n, eq, wq, e, bq);
        var k = Linear([.. mk.Select(f => (double)f)], batch * nk, ek, wk, e, bk);
        var v = Linear([.. mv.Select(f => (double)f)], batch * nk, ev, wv, e, bv);
        int dh = e / heads;
        var concat = new double[batch * n * e];
        var avg = new double[batch * n * nk];
        var s = new double[nk];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < n; i++)
                {
                    double m = double.NegativeInfinity;
                    for (int j = 0; j < nk; j++)
                    {
                        bool visible = (!causal || j <= i) && (keyLengths is null || j < keyLengths[b]);
                        double dot = 0;
                        for (int c = 0; c < dh; c++)
                        {
                            dot += q[(((b * n) + i) * e) + (h * dh) + c] * k[(((b * nk) + j) * e) + (h * dh) + c];
                        }

                        s[j] = visible ? dot / Math.Sqrt(dh) : double.NegativeInfinity;
                        m = Math.Max(m, s[j]);
                    }

                    double l = s.Sum(x => double.IsNegativeInfinity(x) ? 0 : Math.Exp(x - m));
                    for (int j = 0; j < nk; j++)
                    {
                        double a = double.IsNegativeInfinity(s[j]) ? 0 : Math.Exp(s[j] - m) / l;
                        avg[(((b * n) + i) * nk) + j] += a / heads;
                        for (int c = 0; c < dh; c++)
                        {
                            concat[(((b * n) + i) * e) + (h * dh) + c] += a * v[(((b * nk) + j) * e) + (h * dh) + c];
                        }
                    }
                }
            }
        }

        return (Linear(concat, batch * n, e, wo, eOut, bo), avg);
    }

    /// <summary>
    /// A layer is two matrix products around the attention, so its error is held norm-wise, to the
    /// output's largest magnitude: |y − ref| ≤ 2e-6 + 1e-5·max|ref|.
    /// </summary>
    private static void AssertClose(ReadOnlySpan<float> actual, double[] expected, string context)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = expected.Max(Math.Abs), worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(actual[i] - expected[i]);
            if (d > worst)
            {
                (worst, at) = (d, i);
            }
        }

        Assert.True(worst <= 2e-6 + (1e-5 * scale), $"{context}: worst element {at}: {actual[at]:R} vs reference {expected[at]:R}, |diff| {worst:G3} over 2e-6 + 1e-5·{scale:G3}");
    }

    [Fact]
    public async Task Causal_self_attention_with_biases_matches_the_float64_layer_and_the_pipeline_matches_single_node()
    {
        int batch = 2, n = 37, e = 24, heads = 3;
        var x = Save("x.npy", 1f, batch, n, e);
        var wq = Save("wq.npy", 0.3f, e, e);
        var wk = Save("wk.npy", 0.3f, e, e);
        var wv = Save("wv.npy", 0.3f, e, e);
        var wo = Save("wo.npy", 0.3f, 20, e);
        var bq = Save("bq.npy", 0.1f, e);
        var bk = Save("bk.npy", 0.1f, e);
        var bv = Save("bv.npy", 0.1f, e);
        var bo = Save("bo.npy", 0.1f, 20);
        string[] layer = ["mha", "--x", PathOf("x.npy"), "--wq", PathOf("wq.npy"), "--wk", PathOf("wk.npy"), "--wv", PathOf("wv.npy"), "--wo", PathOf("wo.npy"),
            "--bq", PathOf("bq.npy"), "--bk", PathOf("bk.npy"), "--bv", PathOf("bv.npy"), "--bo", PathOf("bo.npy"), "--heads", "3", "--causal", "--block", "16"];
        var (code, _, err) = await Run([.. layer, "--workers", "3", "--out", PathOf("y.npy"), "--weights-avg-out", PathOf("avg.npy")]);
        Assert.True(code == 0, err);
        var (code1, _, err1) = await Run([.. layer, "--single-node", "--workers", "1", "--out", PathOf("y1.npy")]);
        Assert.True(code1 == 0, err1);

        var (expected, avgExpected) = Reference(x, x, x, batch, n, n, e, e, e, e, heads, 20, wq, wk, wv, wo, bq, bk, bv, bo, causal: true, null);
        using var y = NpyFile.Read(PathOf("y.npy"));
        using var y1 = NpyFile.Read(PathOf("y1.npy"));
        using var avg = NpyFile.Read(PathOf("avg.npy"));
        Assert.Equal([batch, n, 20], y.Shape);
        Assert.Equal([batch, n, n], avg.Shape);
        AssertClose(y.Data.Span, expected, "self-attention layer output");
        TestData.AssertBitwise(y1.Data.Span, y.Data.Span, "pipeline (3 workers) vs single node");
        TestData.AssertClose(avg.Data.Span, avgExpected, "head-averaged weights");
    }

    [Fact]
    public async Task Cross_attention_with_kdim_and_vdim_unlike_embed_dim_and_key_padding_matches_the_float64_layer()
    {
        int batch = 2, n = 15, nk = 29, eq = 12, ek = 10, ev = 6, e = 16, heads = 4, eOut = 9;
        var x = Save("x.npy", 1f, batch, n, eq);
        var mk = Save("mk.npy", 1f, batch, nk, ek);
        var mv = Save("mv.npy", 1f, batch, nk, ev);
        var wq = Save("wq.npy", 0.3f, e, eq);
        var wk = Save("wk.npy", 0.3f, e, ek);
        var wv = Save("wv.npy", 0.3f, e, ev);
        var wo = Save("wo.npy", 0.3f, eOut, e);
        var (code, output, err) = await Run("mha", "--x", PathOf("x.npy"), "--memory", PathOf("mk.npy"), "--memory-value", PathOf("mv.npy"), "--wq", PathOf("wq.npy"), "--wk", PathOf("wk.npy"),
            "--wv", PathOf("wv.npy"), "--wo", PathOf("wo.npy"), "--heads", "4", "--key-lengths", "29,7", "--out", PathOf("y.npy"));
        Assert.True(code == 0, err);
        Assert.Contains("4 heads of 4 dims", output, StringComparison.Ordinal);
        var (expected, _) = Reference(x, mk, mv, batch, n, nk, eq, ek, ev, e, heads, eOut, wq, wk, wv, wo, null, null, null, null, causal: false, [29, 7]);
        using var y = NpyFile.Read(PathOf("y.npy"));
        AssertClose(y.Data.Span, expected, "cross-attention layer output");
    }

    [Fact]
    public async Task Sinusoidal_positions_are_added_to_a_2d_input_first()
    {
        int n = 21, e = 8;
        var x = Save("x.npy", 1f, n, e);
        var w = Save("w.npy", 0.4f, e, e);
        var (code, _, err) = await Run("mha", "--x", PathOf("x.npy"), "--wq", PathOf("w.npy"), "--wk", PathOf("w.npy"), "--wv", PathOf("w.npy"), "--wo", PathOf("w.npy"),
            "--heads", "2", "--positional", "sinusoidal", "--out", PathOf("y.npy"));
        Assert.True(code == 0, err);

        // PE[pos, 2i] = sin(pos / 10000^(2i/E)), PE[pos, 2i+1] = cos(pos / 10000^(2i/E)).
        var xp = new float[x.Length];
        for (int pos = 0; pos < n; pos++)
        {
            for (int c = 0; c < e; c++)
            {
                double angle = pos / Math.Pow(10000, (c - (c % 2)) / (double)e);
                xp[(pos * e) + c] = x[(pos * e) + c] + (float)(c % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle));
            }
        }

        var (expected, _) = Reference(xp, xp, xp, 1, n, n, e, e, e, e, 2, e, w, w, w, w, null, null, null, null, causal: false, null);
        using var y = NpyFile.Read(PathOf("y.npy"));
        Assert.Equal([n, e], y.Shape);
        AssertClose(y.Data.Span, expected, "layer with sinusoidal positions");
    }

    [Fact]
    public async Task Weights_that_do_not_fit_the_input_exit_2_naming_the_file_and_the_expected_shape()
    {
        Save("x.npy", 1f, 2, 5, 8);
        Save("w8.npy", 0.3f, 8, 8);
        Save("w6.npy", 0.3f, 8, 6);
        Save("w9.npy", 0.3f, 9, 8);
        Save("b7.npy", 0.1f, 7);
        string[] Layer(string wq, string wk, params string[] more) => ["mha", "--x", PathOf("x.npy"), "--wq", PathOf(wq), "--wk", PathOf(wk), "--wv", PathOf("w8.npy"), "--wo", PathOf("w8.npy"), "--out", PathOf("y.npy"), .. more];
        var cases = new (string[] Args, string Expected)[]
        {
            (Layer("w6.npy", "w8.npy", "--heads", "2"), "w6.npy is [8, 6]; expected [E, 8]"),
            (Layer("w8.npy", "w6.npy", "--heads", "2"), "w6.npy is [8, 6]; expected [8, 8]"),
            (Layer("w8.npy", "w8.npy", "--heads", "3"), "E = 8 (rows of --wq) must be a positive multiple"),
            (Layer("w8.npy", "w8.npy", "--heads", "2", "--bq", PathOf("b7.npy")), "b7.npy is [7]; expected [8]"),
            (Layer("w9.npy", "w8.npy", "--heads", "3"), "w8.npy is [8, 8]; expected [9, 8]"),
            (Layer("w8.npy", "w8.npy", "--heads", "2", "--positional", "learned"), "--positional 'learned' must be sinusoidal"),
        };
        foreach (var (args, expected) in cases)
        {
            var (code, _, err) = await Run(args);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {err}");
            Assert.Contains(expected, err, StringComparison.Ordinal);
        }

        Assert.False(File.Exists(PathOf("y.npy")));
    }
}
