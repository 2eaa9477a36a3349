using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;

namespace AttentionActors.Kernels.Tests;

/// <summary>The canonical tree: any partition, any arrival order, any SIMD width, same bits.</summary>
public class CanonicalTreeTests
{
    private static AttentionProblem Problem(int seed, int nq, int nk, AttentionOptions options, int h = 2, int hk = 1, int dk = 16, int dv = 12)
    {
        var (q, k, v) = TestData.Qkv(seed, 2, h, hk, nq, nk, dk, dv);
        return AttentionProblem.Create(q, k, v, options);
    }

    /// <summary>Cuts [0, n) into <paramref name="parts"/> random non-empty contiguous ranges.</summary>
    private static List<(int Start, int End)> RandomPartition(Random rng, int n, int parts)
    {
        var cuts = Enumerable.Range(1, n - 1).OrderBy(_ => rng.Next()).Take(parts - 1).Append(0).Append(n).Order().ToList();
        return [.. cuts.Zip(cuts.Skip(1))];
    }

    private static float[] Sharded(AttentionProblem p, Random rng, int parts, int b, int h, int rowStart, int rows, out float[] lse)
    {
        var pieces = RandomPartition(rng, p.BlockCount, Math.Min(parts, p.BlockCount))
            .Select(r => Attention.ComputePartials(p, b, h, rowStart, rows, r.Start, r.End))
            .OrderBy(_ => rng.Next())
            .ToList();
        var root = CanonicalTree.Reduce(p.BlockCount, pieces);
        var output = new float[rows * p.ValueDim];
        lse = new float[rows];
        CanonicalTree.Finalize(root, output, lse);
        return output;
    }

    [Fact]
    public void Any_partition_into_1_to_64_parts_in_any_order_gives_the_single_node_bits()
    {
        var rng = new Random(42);
        var options = new AttentionOptions { BlockSize = 16, Causal = true, KeyLengths = [1000, 777] };
        var p = Problem(3, 1000, 1000, options);
        var single = Attention.Compute(p);
        int dv = p.ValueDim;
        for (int parts = 1; parts <= 64; parts++)
        {
            int b = parts % 2, h = parts % 3 % 2;
            int rowStart = rng.Next(0, 900), rows = rng.Next(1, 100);
            var output = Sharded(p, rng, parts, b, h, rowStart, rows, out var lse);
            long offset = single.Output.RowOffset(b, h, rowStart);
            TestData.AssertBitwise(single.Output.Data.Span.Slice((int)offset, rows * dv), output, $"{parts} parts, out");
            TestData.AssertBitwise(single.Lse.AsSpan((int)(offset / dv), rows), lse, $"{parts} parts, lse");
        }
    }

    [Fact]
    public void Partials_from_query_tiles_of_any_size_give_the_single_node_bits()
    {
        var rng = new Random(7);
        var p = Problem(4, 517, 2049, new AttentionOptions { Window = (300, 40), Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 }, 4, 2, 40, 33);
        var single = Attention.Compute(p);
        for (int trial = 0; trial < 20; trial++)
        {
            int rowStart = rng.Next(0, 517);
            int rows = rng.Next(0, 517 - rowStart + 1);
            var output = Sharded(p, rng, rng.Next(1, 30), 1, 3, rowStart, rows, out _);
            TestData.AssertBitwise(single.Output.Data.Span.Slice((int)single.Output.RowOffset(1, 3, rowStart), rows * 33), output, $"rows [{rowStart}, {rowStart + rows})");
        }
    }

    [Fact]
    public void Every_simd_width_gives_identical_bits()
    {
        var rng = new Random(1);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => TestData.Gaussian(rng) * 0.3f).ToArray();
        var optionSets = new[]
        {
            new AttentionOptions { Causal = true, BlockSize = 64 },
            new AttentionOptions { Score = ScoreFunction.Cosine, Temperature = 0.2f, SoftCap = 3f, AlibiSlopes = [0.3f, 0.01f] },
            new AttentionOptions { Score = ScoreFunction.Gaussian, Sigma = 4f, Window = (17, 3) },
            new AttentionOptions { Score = ScoreFunction.Additive, Additive = new AdditiveParameters(Rand(16 * 5), Rand(16 * 5), Rand(5)) },
        };
        foreach (var options in optionSets)
        {
            var p = Problem(8, 263, 263, options);
            var expected = Attention.Compute(p, new ComputeOptions { KernelPath = KernelPath.Scalar });
            foreach (var path in new[] { KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512, KernelPath.Auto })
            {
                var actual = Attention.Compute(p, new ComputeOptions { KernelPath = path });
                TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"{path} vs scalar, {options.Score}");
                TestData.AssertBitwise(expected.Lse, actual.Lse, $"{path} vs scalar lse, {options.Score}");
            }
        }
    }

    [Fact]
    public void Narrow_and_wide_register_tiles_give_identical_bits()
    {
        var p = Problem(12, 301, 517, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, SoftCap = 4f }, 4, 2, 40, 72);
        bool original = Tiles.PanelKernelShape.WideTiles;
        try
        {
            Tiles.PanelKernelShape.WideTiles = true;
            var wide = Attention.Compute(p);
            Tiles.PanelKernelShape.WideTiles = false;
            var narrow = Attention.Compute(p);
            TestData.AssertBitwise(wide.Output.Data.Span, narrow.Output.Data.Span, "4×4 vs 4×2 tiles");
        }
        finally
        {
            Tiles.PanelKernelShape.WideTiles = original;
        }
    }

    /// <summary>
    /// The tile shape may change between panels (a test above flips it while others run): a panel
    /// must cover every row with whichever shape it started with. A panel that re-read the shape
    /// for each step once skipped 4 rows when it flipped from 4-row to 8-row tiles mid-panel.
    /// </summary>
    [Fact]
    public async Task Flipping_the_tile_shape_while_panels_run_does_not_change_the_bits()
    {
        var p = Problem(13, 256, 96, new AttentionOptions { BlockSize = 16 }, 2, 1, 8, 8);
        var expected = Attention.Compute(p, new ComputeOptions { KernelPath = KernelPath.Scalar, Threads = 1 });
        bool original = Tiles.PanelKernelShape.WideTiles;
        using var stop = new CancellationTokenSource();
        var flipper = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                Tiles.PanelKernelShape.WideTiles = !Tiles.PanelKernelShape.WideTiles;
                Thread.SpinWait(50);
            }
        });
        try
        {
            for (int run = 0; run < 300; run++)
            {
                var actual = Attention.Compute(p, new ComputeOptions { KernelPath = KernelPath.Scalar, Threads = 1 });
                TestData.AssertBitwise(expected.Output.Data.Span, actual.Output.Data.Span, $"run {run} while the tile shape flips");
            }
        }
        finally
        {
            stop.Cancel();
            await flipper;
            Tiles.PanelKernelShape.WideTiles = original;
        }
    }

    [Fact]
    public void Thread_count_does_not_change_the_bits()
    {
        var p = Problem(5, 700, 900, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.TopLeft, BlockSize = 48 });
        var one = Attention.Compute(p, new ComputeOptions { Threads = 1 });
        var three = Attention.Compute(p, new ComputeOptions { Threads = 3 });
        TestData.AssertBitwise(one.Output.Data.Span, three.Output.Data.Span, "1 vs 3 threads");
    }

    [Fact]
    public void Decompose_returns_the_maximal_aligned_subtrees()
    {
        Assert.Equal([new TreeNode(0, 3), new TreeNode(2, 1), new TreeNode(1, 4), new TreeNode(0, 10)], CanonicalTree.Decompose(3, 11));
        Assert.Equal([new TreeNode(4, 0)], CanonicalTree.Decompose(0, 16));
        Assert.Empty(CanonicalTree.Decompose(5, 5));
        for (int start = 0; start < 70; start++)
        {
            for (int end = start; end < 70; end++)
            {
                var nodes = CanonicalTree.Decompose(start, end);
                Assert.Equal(end - start, nodes.Sum(n => n.End - n.Start));
                Assert.All(nodes, n => Assert.True(n.Start >= start && n.End <= end));
                Assert.True(nodes.Length <= 2 * (CanonicalTree.Height(70) + 1), $"[{start}, {end}) gave {nodes.Length} nodes");
            }
        }
    }

    [Fact]
    public void Overlapping_nodes_are_rejected()
    {
        var a = new PartialSet([new TreeNode(1, 0)], 1, 1);
        var b = new PartialSet([new TreeNode(0, 1)], 1, 1);
        var ex = Assert.Throws<ArgumentException>(() => CanonicalTree.Reduce(4, [a, b]));
        Assert.Contains("overlap", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_root_is_taken_as_it_is_beside_the_identity_and_refused_beside_keys_of_the_same_row()
    {
        var root = new PartialSet([new TreeNode(2, 0)], 2, 1, [1f, float.NegativeInfinity], [2f, 0f], [3f, 0f]);
        var identity = new PartialSet([new TreeNode(0, 3)], 2, 1, [float.NegativeInfinity, float.NegativeInfinity], [0f, 0f], [0f, 0f]);
        var otherRow = new PartialSet([new TreeNode(1, 0)], 2, 1, [float.NegativeInfinity, 5f], [0f, 1f], [0f, 7f]);
        var reduced = CanonicalTree.Reduce(4, [identity, root, otherRow]);
        Assert.Equal([new TreeNode(2, 0)], reduced.Nodes);
        Assert.Equal([1f, 5f], reduced.M);
        Assert.Equal([2f, 1f], reduced.L);
        Assert.Equal([3f, 7f], reduced.O);

        var sameRow = new PartialSet([new TreeNode(0, 3)], 2, 1, [0.5f, float.NegativeInfinity], [1f, 0f], [4f, 0f]);
        var ex = Assert.Throws<ArgumentException>(() => CanonicalTree.Reduce(4, [root, sameRow]));
        Assert.Contains("row 0", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_blocks_maximum_is_its_largest_logit_to_the_bit_at_every_width_and_scale()
    {
        // Small integer inputs make every dot product exact, so the logits are known independently
        // of the kernel: s_j = round(dot_j · scale). A leaf's m must be their maximum exactly (as
        // +0 when it is a zero), whether the kernel scaled each logit or scaled the scores' maximum.
        var rng = new Random(5);
        int nq = 40, nk = (3 * 64) + 20, d = 16;
        float[] Integers(int count) => [.. Enumerable.Range(0, count).Select(_ => (float)rng.Next(-8, 9))];
        var q = AttentionTensor.FromArray("Q", Integers(nq * d), 1, 1, nq, d);
        var k = AttentionTensor.FromArray("K", Integers(nk * d), 1, 1, nk, d);
        var v = AttentionTensor.FromArray("V", Integers(nk * 8), 1, 1, nk, 8);
        int compared = 0;
        foreach (float scale in new[] { 0.37f, 0.3f, 1f, 0f, -0.5f })
        {
            var p = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 64, Scale = scale });
            foreach (var path in new[] { KernelPath.Scalar, KernelPath.Vector128, KernelPath.Vector256, KernelPath.Vector512, KernelPath.Auto })
            {
                for (int kb = 0; kb < p.BlockCount; kb++)
                {
                    var leaf = Attention.ComputePartials(p, 0, 0, 0, nq, kb, kb + 1, path);
                    for (int i = 0; i < nq; i++)
                    {
                        float expected = float.NegativeInfinity;
                        for (int j = kb * 64; j < Math.Min(nk, (kb + 1) * 64); j++)
                        {
                            double dot = 0;
                            for (int c = 0; c < d; c++)
                            {
                                dot += (double)q.Data.Span[(i * d) + c] * k.Data.Span[(j * d) + c];
                            }

                            expected = Math.Max(expected, (float)dot * scale);
                        }

                        expected += 0f;
                        Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(leaf.M[i]), $"scale {scale}, {path}, block {kb}, row {i}: m {leaf.M[i]:R}, largest logit {expected:R}");
                        compared++;
                    }
                }
            }
        }

        Assert.Equal(5 * 5 * 4 * nq, compared);
    }

    [Fact]
    public void Aligned_pieces_pushed_left_to_right_give_the_nodes_and_bits_of_the_whole_range()
    {
        var rng = new Random(11);
        var p = Problem(6, 400, 1000, new AttentionOptions { BlockSize = 16, Causal = true, Alignment = DiagonalAlignment.BottomRight }, 2, 1, 16, 12);
        int compared = 0;
        for (int trial = 0; trial < 30; trial++)
        {
            int start = rng.Next(0, p.BlockCount - 1), end = rng.Next(start + 1, p.BlockCount + 1), rowStart = rng.Next(0, 300), rows = rng.Next(1, 100);
            int piece = 1 << rng.Next(0, 4);
            var whole = Attention.ComputePartials(p, 1, 1, rowStart, rows, start, end);
            var (first, last) = p.Geometry.VisibleBlocks(1, rowStart, rows, start, end);
            if (whole.Nodes.Length == 0 || whole.Nodes.SequenceEqual(CanonicalTree.Decompose(first, last)) is false)
            {
                continue;
            }

            var stack = new TreeStack();
            foreach (var node in CanonicalTree.Decompose(first, last))
            {
                long size = Math.Min(node.End - node.Start, piece);
                for (long at = node.Start; at < node.End; at += size)
                {
                    stack.Push(Attention.ComputePartials(p, 1, 1, rowStart, rows, (int)at, (int)(at + size)));
                }
            }

            var pushed = stack.ToSet();
            TestData.AssertSamePartials(whole, pushed, $"trial {trial}");
            compared++;
        }

        Assert.True(compared >= 10, $"only {compared} of 30 ranges were compared");
    }
}
