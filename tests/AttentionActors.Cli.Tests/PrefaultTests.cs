using System.Globalization;
using AttentionActors.Cli.Npy;

namespace AttentionActors.Cli.Tests;

/// <summary>A mapped .npy file's pages are mapped in one call when it is opened, not faulted in one by one later.</summary>
public sealed class PrefaultTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-prefault-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void An_output_and_an_input_are_resident_before_anything_touches_them()
    {
        Assert.True(OperatingSystem.IsLinux(), "these machines run Linux");
        string path = Path.Combine(dir, "o.npy");
        const int rows = 4096, dim = 256;
        using (var output = NpyFile.Create(path, [rows, dim]))
        {
            long rss = ResidentBytes(path);
            Assert.True(rss >= 4L * rows * dim, $"a new {4L * rows * dim:N0}-byte output has {rss:N0} bytes mapped before its first write");
        }

        using (var input = NpyFile.Read(path))
        {
            long rss = ResidentBytes(path);
            Assert.True(rss >= 4L * rows * dim, $"a {4L * rows * dim:N0}-byte input has {rss:N0} bytes mapped before its first read");
        }
    }

    /// <summary>The Rss of this process's mappings of <paramref name="path"/>, from /proc/self/smaps.</summary>
    private static long ResidentBytes(string path)
    {
        long total = 0;
        bool inFile = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-', StringComparison.Ordinal))
            {
                inFile = line.EndsWith(path, StringComparison.Ordinal);
            }
            else if (inFile && line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                total += long.Parse(line["Rss:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }

        return total;
    }
}
