namespace AttentionActors.Kernels.Tests;

/// <summary>
/// A tensor larger than one buffer is held in segments of whole (batch, head) planes: every row
/// range reads the values of the same tensor held whole, a shard sliced from it is the same shard,
/// and the validator finds a bad value in any segment by its global index.
/// </summary>
public class SegmentedTensorTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(7)]
    public void Every_row_range_reads_the_values_of_the_whole_tensor(int planesPerSegment)
    {
        var whole = TestData.Normal("K", 41, 2, 3, 37, 5);
        var segmented = TestData.Segment(whole, planesPerSegment);
        Assert.True(segmented.IsSegmented);
        Assert.Equal(whole.Length, segmented.Length);
        var rng = new Random(planesPerSegment);
        for (int trial = 0; trial < 200; trial++)
        {
            int b = rng.Next(2), h = rng.Next(3), i = rng.Next(37), count = rng.Next(0, 37 - i + 1);
            TestData.AssertBitwise(whole.Rows(b, h, i, count).Span, segmented.Rows(b, h, i, count).Span, $"rows [{i}, {i + count}) of ({b}, {h}) in segments of {planesPerSegment} planes");
        }
    }

    [Fact]
    public void A_segmented_tensor_has_no_single_buffer_and_says_so_by_name()
    {
        var segmented = TestData.Segment(TestData.Normal("Q", 42, 1, 4, 8, 4), 1);
        var ex = Assert.Throws<AttentionInputException>(() => segmented.Data);
        Assert.Contains("Q[1, 4, 8, 4]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("4 segments", ex.Message, StringComparison.Ordinal);
        var outside = Assert.Throws<AttentionInputException>(() => segmented.Rows(0, 4, 0, 1));
        Assert.Contains("head 4", outside.Message, StringComparison.Ordinal);
        Assert.Throws<AttentionInputException>(() => segmented.Rows(0, 1, 6, 3));
    }

    [Fact]
    public void Segments_that_do_not_hold_whole_planes_are_refused_by_name()
    {
        Memory<float> plane = new float[32];
        var cases = new (string Why, Memory<float>[] Segments, string Expected)[]
        {
            ("no segments", [], "at least one segment"),
            ("part of a plane", [new float[33], plane], "not a whole number"),
            ("too few", [plane], "that takes 2"),
            ("last too long", [plane, new float[64]], "segment 1 holds 64"),
            ("middle short", [new float[64], plane, plane], "that takes 1"),
        };
        foreach (var (why, segments, expected) in cases)
        {
            var ex = Assert.Throws<AttentionInputException>(() => AttentionTensor.Segmented("V", segments, 1, 2, 8, 4));
            Assert.True(ex.Message.Contains(expected, StringComparison.Ordinal) && ex.Message.StartsWith('V'), $"{why}: {ex.Message}");
        }
    }

    [Fact]
    public void Shards_sliced_from_segmented_tensors_are_the_shards_of_the_whole_ones()
    {
        var (q, k, v) = TestData.Qkv(43, 2, 4, 2, 130, 170, 16, 8);
        var options = new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 };
        var whole = AttentionProblem.Create(q, k, v, options);
        var parts = AttentionProblem.Create(TestData.Segment(q, 3), TestData.Segment(k, 1), TestData.Segment(v, 3), options);
        var rng = new Random(43);
        for (int trial = 0; trial < 24; trial++)
        {
            int b = rng.Next(2), h = rng.Next(4), r0 = rng.Next(130), rows = rng.Next(1, 130 - r0 + 1);
            int k0 = rng.Next(whole.BlockCount), k1 = rng.Next(k0 + 1, whole.BlockCount + 1);
            TestData.AssertSamePartials(
                Attention.ComputePartials(whole, b, h, r0, rows, k0, k1),
                Attention.ComputePartials(ShardInput.Slice(parts, b, h, r0, rows, k0, k1)),
                $"shard ({b}, {h}) rows [{r0}, {r0 + rows}) blocks [{k0}, {k1})");
        }
    }

    [Fact]
    public void A_bad_value_in_a_later_segment_is_named_by_its_global_index()
    {
        var k = TestData.Normal("K", 44, 2, 2, 16, 4);
        k.Data.Span[(int)k.RowOffset(1, 1, 9) + 2] = float.NaN;
        var (q, _, v) = TestData.Qkv(45, 2, 2, 2, 16, 16, 4, 4);
        var ex = Assert.Throws<AttentionInputException>(() => AttentionProblem.Create(q, TestData.Segment(k, 1), v, new AttentionOptions()));
        Assert.Contains("K[1, 1, 9, 2] is NaN", ex.Message, StringComparison.Ordinal);
    }
}
