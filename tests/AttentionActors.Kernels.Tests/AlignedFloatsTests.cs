using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels.Tests;

/// <summary>The kernel's scratch buffers and packed keys start on cache lines, and their bounds hold.</summary>
public class AlignedFloatsTests
{
    private static unsafe long AddressOf(ref float element)
    {
        fixed (float* at = &element)
        {
            return (long)at;
        }
    }

    [Fact]
    public void Buffers_start_on_a_64_byte_boundary_and_are_zeroed()
    {
        for (int length = 1; length <= 300; length += 7)
        {
            var buffer = new AlignedFloats(length);
            Assert.Equal(0, AddressOf(ref buffer[0]) % 64);
            Assert.Equal(length, buffer.Length);
            Assert.All(buffer.AsSpan(0, length).ToArray(), x => Assert.Equal(0f, x));
        }
    }

    [Fact]
    public void Indexing_and_slicing_outside_the_length_are_refused()
    {
        var buffer = new AlignedFloats(10);
        buffer[9] = 3f;
        Assert.Equal(3f, buffer.AsSpan(9, 1)[0]);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer[10]);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer[-1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.AsSpan(8, 3).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.AsSpan(11, 0).Length);
        Assert.Equal(0, buffer.AsSpan(10, 0).Length);
    }

    [Fact]
    public void Alignment_pad_reaches_the_next_cache_line()
    {
        for (int i = 0; i < 20; i++)
        {
            // Pinned, so a collection between the two reads of its address cannot move it.
            var array = GC.AllocateArray<float>(100 + i, pinned: true);
            int pad = AlignedFloats.AlignmentPad(array);
            Assert.InRange(pad, 0, 15);
            Assert.Equal(0, AddressOf(ref array[pad]) % 64);
        }
    }

    [Fact]
    public void Every_packed_key_block_starts_on_a_cache_line()
    {
        // 1000 keys in blocks of 112 (the last one 104 keys, padded to 112); a block is 64·112 floats.
        var (q, k, v) = TestData.Qkv(4, 1, 1, 1, 1, 1000, 64, 64);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 112 });
        using var pack = KeyPack.Create(problem, 0, 0, 2, problem.BlockCount);
        for (int kb = 2; kb < problem.BlockCount; kb++)
        {
            Assert.Equal(0, AddressOf(ref pack.Data[pack.Offset(kb)]) % 64);

            // The block holds keys j0.. transposed: feature 5 of the block's third key.
            Assert.Equal(k.Data.Span[(int)k.RowOffset(0, 0, (kb * 112) + 2) + 5], pack.Data[pack.Offset(kb) + (5 * pack.RowStride) + 2]);
        }
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(128, 144)]
    [InlineData(40, 48)]
    public void A_pack_with_values_holds_each_blocks_value_rows_on_cache_lines(int valueDim, int rowStride)
    {
        var (q, k, v) = TestData.Qkv(5, 1, 2, 1, 1, 1000, 32, valueDim);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { BlockSize = 112 });
        using var pack = KeyPack.Create(problem, 0, 0, 1, problem.BlockCount, values: true);
        Assert.Equal(rowStride, pack.ValueRowStride);
        for (int kb = 1; kb < problem.BlockCount; kb++)
        {
            Assert.Equal(0, AddressOf(ref pack.Data[pack.ValueOffset(kb)]) % 64);
            int n = Math.Min(112, 1000 - (kb * 112));
            for (int j = 0; j < n; j += 7)
            {
                for (int c = 0; c < valueDim; c += 3)
                {
                    Assert.Equal(v.Data.Span[(int)v.RowOffset(0, 0, (kb * 112) + j) + c], pack.Data[pack.ValueOffset(kb) + (j * rowStride) + c]);
                }
            }

            // The keys are still where they were: the values come after every key block.
            Assert.Equal(k.Data.Span[(int)k.RowOffset(0, 0, (kb * 112) + 3) + 7], pack.Data[pack.Offset(kb) + (7 * pack.RowStride) + 3]);
        }

        using var keysOnly = KeyPack.Create(problem, 0, 0, 1, problem.BlockCount);
        Assert.False(keysOnly.HasValues);
    }
}
