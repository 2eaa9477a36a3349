namespace AttentionActors.Kernels.Tests;

/// <summary>y = x·Wᵀ + b against float64 and against its definition — one fused multiply-add chain per output — for every remainder of the 8-row tiles, 32-output panels and 64-row work items.</summary>
public class ProjectionTests
{
    [Fact]
    public void Every_shape_up_to_9_rows_9_outputs_and_40_inputs_matches_float64_and_threads_change_no_bit()
    {
        var rng = new Random(9);
        for (int rows = 0; rows <= 9; rows++)
        {
            for (int outDim = 1; outDim <= 9; outDim++)
            {
                foreach (int inDim in new[] { 1, 7, 16, 17, 33, 40 })
                {
                    var x = Enumerable.Range(0, rows * inDim).Select(_ => TestData.Gaussian(rng)).ToArray();
                    var w = Enumerable.Range(0, outDim * inDim).Select(_ => TestData.Gaussian(rng)).ToArray();
                    var b = outDim % 2 == 0 ? Enumerable.Range(0, outDim).Select(_ => TestData.Gaussian(rng)).ToArray() : null;
                    var y = Projection.Linear(x, rows, inDim, w, outDim, b);
                    for (int r = 0; r < rows; r++)
                    {
                        for (int c = 0; c < outDim; c++)
                        {
                            // A dot product is conditioned by Σ|x·w|: float32 sums err relative to it, not to the result.
                            double exact = b?[c] ?? 0, magnitude = Math.Abs(b?[c] ?? 0);
                            for (int k = 0; k < inDim; k++)
                            {
                                exact += (double)x[(r * inDim) + k] * w[(c * inDim) + k];
                                magnitude += Math.Abs((double)x[(r * inDim) + k] * w[(c * inDim) + k]);
                            }

                            float got = y[(r * outDim) + c];
                            Assert.True(Math.Abs(got - exact) <= 1e-6 * (1 + magnitude), $"[{rows}×{inDim}]·[{outDim}×{inDim}]ᵀ at ({r}, {c}): {got:R} vs {exact:R} (Σ|x·w| = {magnitude:G3})");
                        }
                    }

                    TestData.AssertBitwise(y, Projection.Linear(x, rows, inDim, w, outDim, b, threads: 3), $"[{rows}×{inDim}]·[{outDim}×{inDim}]ᵀ on 3 threads");
                }
            }
        }
    }

    [Fact]
    public void Every_output_is_its_fused_multiply_add_chain_in_ascending_k_bit_for_bit()
    {
        // The bits every SIMD width must give (the suite runs this at each): acc = fma(x[r, k], W[c, k], acc) from 0, then + b[c].
        var rng = new Random(10);
        foreach (int rows in new[] { 1, 7, 8, 9, 17, 64, 71, 130 })
        {
            foreach (int outDim in new[] { 1, 31, 32, 33, 64, 97 })
            {
                foreach (int inDim in new[] { 1, 16, 37, 129 })
                {
                    var x = Enumerable.Range(0, rows * inDim).Select(_ => TestData.Gaussian(rng)).ToArray();
                    var w = Enumerable.Range(0, outDim * inDim).Select(_ => TestData.Gaussian(rng)).ToArray();
                    var b = outDim % 2 == 1 ? Enumerable.Range(0, outDim).Select(_ => TestData.Gaussian(rng)).ToArray() : null;
                    var expected = new float[rows * outDim];
                    for (int r = 0; r < rows; r++)
                    {
                        for (int c = 0; c < outDim; c++)
                        {
                            float acc = 0;
                            for (int k = 0; k < inDim; k++)
                            {
                                acc = MathF.FusedMultiplyAdd(x[(r * inDim) + k], w[(c * inDim) + k], acc);
                            }

                            expected[(r * outDim) + c] = b is null ? acc : acc + b[c];
                        }
                    }

                    TestData.AssertBitwise(expected, Projection.Linear(x, rows, inDim, w, outDim, b, threads: 2), $"[{rows}×{inDim}]·[{outDim}×{inDim}]ᵀ{(b is null ? "" : " + b")}");
                    TestData.AssertBitwise(expected, Projection.Linear(x, rows, Projection.Pack(w, outDim, inDim), b), $"[{rows}×{inDim}]·[{outDim}×{inDim}]ᵀ{(b is null ? "" : " + b")}, W packed beforehand");
                }
            }
        }
    }

    [Fact]
    public void Shapes_that_do_not_multiply_are_refused_with_the_sizes()
    {
        var ex = Assert.Throws<ArgumentException>(() => Projection.Linear(new float[12], 3, 4, new float[10], 2, null));
        Assert.Contains("[3, 4]·[2, 4]ᵀ", ex.Message, StringComparison.Ordinal);
        var packed = Projection.Pack(new float[8], 2, 4);
        ex = Assert.Throws<ArgumentException>(() => Projection.Linear(new float[10], 3, packed, null));
        Assert.Contains("[3, 4]·[2, 4]ᵀ", ex.Message, StringComparison.Ordinal);
        ex = Assert.Throws<ArgumentException>(() => Projection.Pack(new float[10], 2, 4));
        Assert.Contains("[2, 4] needs 8", ex.Message, StringComparison.Ordinal);
    }
}
