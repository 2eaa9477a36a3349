using System.Globalization;

namespace AttentionActors.Kernels.Tests;

/// <summary>Large outputs are advised as huge pages before their first touch; small ones are left alone.</summary>
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
