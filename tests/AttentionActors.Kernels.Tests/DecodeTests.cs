using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Simd;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels.Tests;

/// <summary>
/// Decoding shapes (Nq ≤ 256 rows per head against many keys) take the split-KV path, which stacks
/// the query heads of a K/V group into one panel: its bits must be those of per-head shards.
/// </summary>
public class DecodeTests
{
    public static TheoryData<string> Cases => ["one row, GQA 4", "three rows, causal + padding", "16 rows, ALiBi + soft-cap", "40 rows, unstacked window", "cosine + per-head mask", "additive", "gaussian + entropy"];

    private static AttentionProblem Case(string name)
    {
        AttentionProblem Make(int nq, int nk, int h, int hk, int dk, int dv, AttentionOptions options, AttentionMask? mask = null)
        {
            var (q, k, v) = TestData.Qkv(nq + nk + h, 2, h, hk, nq, nk, dk, dv);
            return AttentionProblem.Create(q, k, v, options, mask);
        }

        return name switch
        {
            "one row, GQA 4" => Make(1, 1000, 8, 2, 40, 24, new AttentionOptions { BlockSize = 32 }),
            "three rows, causal + padding" => Make(3, 777, 8, 2, 16, 16, new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.BottomRight, KeyLengths = [777, 500] }),
            "16 rows, ALiBi + soft-cap" => Make(16, 600, 8, 2, 32, 20, new AttentionOptions { BlockSize = 64, SoftCap = 5f, AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(8), Causal = true, Alignment = DiagonalAlignment.BottomRight }),
            "40 rows, unstacked window" => Make(40, 900, 8, 2, 16, 16, new AttentionOptions { BlockSize = 32, Window = (200, 0), Alignment = DiagonalAlignment.BottomRight }),
            "cosine + per-head mask" => Make(2, 300, 6, 2, 16, 8, new AttentionOptions { BlockSize = 16, Score = ScoreFunction.Cosine, Temperature = 0.1f }, HeadMask(2, 6, 2, 300)),
            "additive" => Make(2, 200, 4, 1, 16, 8, new AttentionOptions { BlockSize = 32, Score = ScoreFunction.Additive, Additive = new AdditiveParameters(TestData.Uniform(16 * 6, 1), TestData.Uniform(16 * 6, 2), TestData.Uniform(6, 3)) }),
            "gaussian + entropy" => Make(5, 400, 4, 4, 16, 16, new AttentionOptions { BlockSize = 32, Score = ScoreFunction.Gaussian, Sigma = 3f, Entropy = true }),
            _ => throw new ArgumentException(name),
        };
    }

    /// <summary>A per-(batch, head) bool mask hiding a different stripe of keys in each plane, and every key from one row.</summary>
    private static AttentionMask HeadMask(int batch, int heads, int nq, int nk)
    {
        var allowed = new bool[batch * heads * nq * nk];
        for (int plane = 0; plane < batch * heads; plane++)
        {
            for (int i = 0; i < nq; i++)
            {
                for (int j = 0; j < nk; j++)
                {
                    allowed[(((plane * nq) + i) * nk) + j] = !(plane == 3 && i == 1) && (j / 37 % 3) != plane % 3;
                }
            }
        }

        return AttentionMask.Boolean(allowed, batch, heads, nq, nk);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Split_kv_gives_the_bits_of_per_head_shards_at_every_width_and_thread_count(string name)
    {
        var p = Case(name);
        Assert.True(Attention.SplitsKeys(p), $"{name}: {p.QuerySeq} rows should take the split-KV path");
        var rng = new Random(5);
        int dv = p.ValueDim;
        var output = new float[p.Batch * p.Heads * p.QuerySeq * dv];
        var lse = new float[p.Batch * p.Heads * p.QuerySeq];
        var entropy = new float[lse.Length];
        for (int b = 0; b < p.Batch; b++)
        {
            for (int h = 0; h < p.Heads; h++)
            {
                // Per-head shards over a random cut of the blocks, merged by the reducer's tree.
                var cuts = Enumerable.Range(1, p.BlockCount - 1).OrderBy(_ => rng.Next()).Take(rng.Next(0, 6)).Append(0).Append(p.BlockCount).Order().ToList();
                var pieces = cuts.Zip(cuts.Skip(1)).Select(r => Attention.ComputePartials(p, b, h, 0, p.QuerySeq, r.First, r.Second, KernelPath.Scalar)).ToList();
                var root = CanonicalTree.Reduce(p.BlockCount, pieces);
                int row0 = ((b * p.Heads) + h) * p.QuerySeq;
                for (int r = 0; r < p.QuerySeq; r++)
                {
                    PartialMath.Finalize(root.M[r], root.L[r], root.RowO(0, r)[..dv], output.AsSpan((row0 + r) * dv, dv), out lse[row0 + r]);
                    entropy[row0 + r] = p.Options.Entropy ? PartialMath.Entropy(root.L[r], root.RowO(0, r)[dv], lse[row0 + r]) : 0f;
                }
            }
        }

        var reference = ReferenceAttention.Compute(p.Q, p.K, p.V, p.Options, p.Mask);
        foreach (var path in new[] { KernelPath.Scalar, KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512 })
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                // With 3 threads every unit's partials go to a rented array of their own.
                Attention.PartialBankValues = threads == 3 ? 1 : 1L << 30;
                AttentionResult actual;
                try
                {
                    actual = Attention.Compute(p, new ComputeOptions { KernelPath = path, Threads = threads });
                }
                finally
                {
                    Attention.PartialBankValues = 1L << 30;
                }

                string context = $"{name}, {path}, {threads} threads";
                TestData.AssertWithinContract(actual, reference, context);
                TestData.AssertBitwise(output, actual.Output.Data.Span, $"{context}: out");
                TestData.AssertBitwise(lse, actual.Lse, $"{context}: lse");
                if (p.Options.Entropy)
                {
                    TestData.AssertBitwise(entropy, actual.Entropy, $"{context}: entropy");
                }
            }
        }
    }

    [Fact]
    public void A_single_head_decoding_step_is_split_across_threads()
    {
        var (q, k, v) = TestData.Qkv(3, 1, 1, 1, 1, 64 * 128, 8, 8);
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 128 });
        int chunk = Attention.ChunkBlocks(p, 2);
        int items = (p.BlockCount + chunk - 1) / chunk;
        Assert.True(items >= 8, $"one (batch, kv-head) of {p.BlockCount} blocks gives {items} chunks of {chunk} blocks for 2 threads");
        Assert.True((chunk & (chunk - 1)) == 0, $"chunk of {chunk} blocks is not a power of two");
    }

    [Fact]
    public void A_repeated_decoding_step_rents_its_partials_instead_of_allocating_them()
    {
        // 2 K/V groups of 4 heads × 16 rows, 512 blocks in 32 chunks: 2 × 32 × 64 rows × 64 values of partials.
        var (q, k, v) = TestData.Qkv(11, 1, 8, 2, 16, 65536, 64, 64);
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 128 });
        var settings = new ComputeOptions { Threads = 1 };
        long partialBytes = 2L * (p.BlockCount / Attention.ChunkBlocks(p, 1)) * (4 * 16) * p.PartialWidth * sizeof(float);
        var first = Attention.Compute(p, settings);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var second = Attention.Compute(p, settings);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        TestData.AssertBitwise(first.Output.Data.Span, second.Output.Data.Span, "second step: out");
        long outputBytes = (long)p.Batch * p.Heads * p.QuerySeq * (p.ValueDim + 1) * sizeof(float);
        Assert.True(allocated < outputBytes + (partialBytes / 8), $"a repeated step allocated {allocated} bytes: its output and lse are {outputBytes}, its partials {partialBytes}");
    }

    /// <summary>
    /// Shards of up to <see cref="Attention.PackAsItGoesRows"/> rows (one panel) pack their keys as
    /// they go; a shard or problem of more rows computes from a pack. Shards of a few rows to a panel's
    /// and more, anywhere in the rows (the causal diagonal and ALiBi depend on where), over random
    /// cuts of the blocks, merged by the reducer's tree, give the bits of the whole problem at every width.
    /// </summary>
    [Fact]
    public void Shards_of_any_rows_give_the_bits_of_the_packed_row_path()
    {
        var (q, k, v) = TestData.Qkv(17, 1, 4, 2, PanelKernelShape.PanelRows + 44, 700, 40, 24);
        var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 32, Causal = true, Alignment = DiagonalAlignment.BottomRight, AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(4), SoftCap = 8f });
        Assert.False(Attention.SplitsKeys(p));
        var rng = new Random(9);
        int dv = p.ValueDim;
        foreach (var path in new[] { KernelPath.Scalar, KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512 })
        {
            var whole = Attention.Compute(p, new ComputeOptions { KernelPath = path, Threads = 2 });
            for (int h = 0; h < p.Heads; h++)
            {
                foreach (var (rowStart, rows) in new[] { (0, Attention.PackAsItGoesRows), (5, 3), (131, 16), (p.QuerySeq - Attention.PackAsItGoesRows, Attention.PackAsItGoesRows), (0, p.QuerySeq) })
                {
                    var cuts = Enumerable.Range(1, p.BlockCount - 1).OrderBy(_ => rng.Next()).Take(rng.Next(0, 5)).Append(0).Append(p.BlockCount).Order().ToList();
                    var pieces = cuts.Zip(cuts.Skip(1)).Select(r => Attention.ComputePartials(p, 0, h, rowStart, rows, r.First, r.Second, path)).ToList();
                    var root = CanonicalTree.Reduce(p.BlockCount, pieces);
                    var output = new float[rows * dv];
                    var lse = new float[rows];
                    for (int r = 0; r < rows; r++)
                    {
                        PartialMath.Finalize(root.M[r], root.L[r], root.RowO(0, r)[..dv], output.AsSpan(r * dv, dv), out lse[r]);
                    }

                    int row0 = (h * p.QuerySeq) + rowStart;
                    string context = $"{path}, head {h}, rows [{rowStart}, {rowStart + rows}), cuts {string.Join(',', cuts)}";
                    TestData.AssertBitwise(whole.Output.Data.Span.Slice(row0 * dv, rows * dv), output, $"{context}: out");
                    TestData.AssertBitwise(whole.Lse.AsSpan(row0, rows), lse, $"{context}: lse");
                }
            }
        }
    }

    [Fact]
    public void Panels_of_many_rows_keep_the_row_path()
    {
        var (q, k, v) = TestData.Qkv(3, 1, 2, 1, PanelKernelShape.PanelRows + 1, 1000, 8, 8);
        Assert.False(Attention.SplitsKeys(AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 32 })));
    }
}
