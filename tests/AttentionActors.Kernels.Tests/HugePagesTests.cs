using System.Globalization;

namespace AttentionActors.Kernels.Tests;

/// <summary>Large outputs and key packs are advised as huge pages before their first touch; small arrays are left alone.</summary>
public class HugePagesTests
{
    [Fact]
    public unsafe void A_large_array_is_zero_and_its_interior_is_advised_as_huge_pages()
    {
        Assert.True(OperatingSystem.IsLinux(), "these machines run Linux");
        var array = HugePages.Floats(12 << 20);
        Assert.Equal(12 << 20, array.Length);
        Assert.True(array.AsSpan().IndexOfAnyExcept(0f) < 0, "a fresh array must be zero");

        fixed (float* first = array)
        {
            // A 2 MiB-aligned address inside the array: madvise(MADV_HUGEPAGE) marks its mapping "hg" in /proc/self/smaps.
            long inside = (((long)first + (2L << 20) - 1) & ~((2L << 20) - 1)) + 4096;
            Assert.True(inside < (long)(first + array.Length), "a 48 MiB array spans whole 2 MiB pages");
            var flags = VmFlags(inside);
            Assert.True(flags.Contains("hg", StringComparer.Ordinal), $"the mapping at 0x{inside:x} has VmFlags [{string.Join(' ', flags)}], without hg (MADV_HUGEPAGE)");
        }

        GC.KeepAlive(array);
    }

    [Fact]
    public unsafe void A_heads_key_pack_is_advised_as_huge_pages()
    {
        // 8192 keys of 64 dims with their values: about 4.7 MiB, a thousand small-page faults on first use.
        var (q, k, v) = TestData.Qkv(3, 1, 1, 1, 16, 8192, 64, 64);
        var problem = AttentionProblem.Create(q, k, v);
        using var pack = Tiles.KeyPack.Allocate(problem, 0, problem.BlockCount, values: true);
        fixed (float* first = pack.Data)
        {
            long inside = (((long)first + (2L << 20) - 1) & ~((2L << 20) - 1)) + 4096;
            Assert.True(inside < (long)(first + pack.Data.Length), $"a pack of {pack.Data.Length:N0} floats spans a whole 2 MiB page");
            var flags = VmFlags(inside);
            Assert.True(flags.Contains("hg", StringComparer.Ordinal), $"the pack's mapping at 0x{inside:x} has VmFlags [{string.Join(' ', flags)}], without hg (MADV_HUGEPAGE)");
        }
    }

    [Fact]
    public void An_output_given_to_compute_into_gets_the_bits_of_a_new_one()
    {
        // The dense path and the split-key (decoding) path, each into a caller's array full of junk.
        foreach (var (nq, nk) in new[] { (300, 700), (1, 4096) })
        {
            var (q, k, v) = TestData.Qkv(nq, 2, 4, 2, nq, nk, 32, 24);
            var problem = AttentionProblem.Create(q, k, v);
            var expected = Attention.Compute(problem);
            var junk = Enumerable.Repeat(float.NaN, expected.Output.Data.Length).ToArray();
            var into = AttentionTensor.FromArray("out", junk, 2, 4, nq, 24);
            var actual = Attention.ComputeInto(problem, into);
            Assert.Same(into, actual.Output);
            TestData.AssertBitwise(expected.Output.Data.Span, junk, $"Nq {nq}, Nk {nk}: output");
            TestData.AssertBitwise(expected.Lse, actual.Lse, $"Nq {nq}, Nk {nk}: lse");
            var wrong = AttentionTensor.FromArray("out", new float[junk.Length], 2, 4, 24, nq);
            var error = Assert.Throws<ArgumentException>(() => Attention.ComputeInto(problem, wrong));
            Assert.Contains($"[2, 4, {nq}, 24]", error.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void A_small_array_is_just_an_array()
    {
        var array = HugePages.Floats(1000);
        Assert.Equal(1000, array.Length);
        Assert.True(array.AsSpan().IndexOfAnyExcept(0f) < 0);
    }

    /// <summary>The VmFlags of the mapping holding <paramref name="address"/>.</summary>
    private static string[] VmFlags(long address)
    {
        bool inRange = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long start)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long end))
            {
                inRange = start <= address && address < end;
            }
            else if (inRange && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            }
        }

        throw new InvalidOperationException($"no mapping holds 0x{address:x}");
    }
}
