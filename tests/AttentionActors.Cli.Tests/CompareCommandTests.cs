using System.Text;
using AttentionActors.Cli.Npy;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention compare` on real .npy files whose differences are made by hand.</summary>
public sealed class CompareCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-compare-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string F32(string name, float[] data, params int[] shape)
    {
        string path = Path.Combine(dir, name);
        NpyFile.Write(path, data, shape);
        return path;
    }

    private string F64(string name, double[] data, string shape)
    {
        string dict = $"{{'descr': '<f8', 'fortran_order': False, 'shape': ({shape}), }}";
        int padded = ((10 + dict.Length + 1 + 63) / 64) * 64;
        string header = dict + new string(' ', padded - 10 - dict.Length - 1) + "\n";
        string path = Path.Combine(dir, name);
        using var s = File.Create(path);
        s.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        s.Write(BitConverter.GetBytes((ushort)header.Length));
        s.Write(Encoding.ASCII.GetBytes(header));
        s.Write(data.SelectMany(BitConverter.GetBytes).ToArray());
        return path;
    }

    private static float[] Reference(int n)
    {
        var rng = new Random(3);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
    }

    [Fact]
    public async Task Identical_files_are_bitwise_equal_and_exit_0()
    {
        var b = Reference(2 * 3 * 50 * 8);
        string path = F32("b.npy", b, 2, 3, 50, 8);
        var (code, stdout, stderr) = await Run("compare", path, F32("a.npy", b, 2, 3, 50, 8), "--tolerance", "bitwise");
        Assert.True(code == 0, stderr);
        Assert.Contains("2,400 float32 values of shape [2, 3, 50, 8]; bitwise equal: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("ULP distance  0: 2,400  1: 0", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task One_ulp_passes_the_contract_but_not_bitwise_and_the_worst_element_is_named()
    {
        var b = Reference(2 * 3 * 50 * 8);
        var a = (float[])b.Clone();
        int oneUlp = (((1 * 3) + 2) * 50 + 7) * 8 + 3;
        a[oneUlp] = MathF.BitIncrement(a[oneUlp]);
        int far = (((0 * 3) + 1) * 50 + 4) * 8 + 5;
        a[far] += 1e-3f;
        string pa = F32("a.npy", a, 2, 3, 50, 8), pb = F32("b.npy", b, 2, 3, 50, 8);

        var (code, stdout, _) = await Run("compare", pa, pb);
        Assert.Equal(1, code);
        Assert.Contains("bitwise equal: no (2 differ)", stdout, StringComparison.Ordinal);
        Assert.Contains("1 outside the contract", stdout, StringComparison.Ordinal);
        Assert.Contains("0: 2,398  1: 1", stdout, StringComparison.Ordinal);
        Assert.Contains("worst element [0, 1, 4, 5]", stdout, StringComparison.Ordinal);

        a[far] = b[far];
        pa = F32("a2.npy", a, 2, 3, 50, 8);
        (code, stdout, _) = await Run("compare", pa, pb);
        Assert.Equal(0, code);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);
        Assert.Contains("worst element [1, 2, 7, 3]", stdout, StringComparison.Ordinal);
        (code, _, _) = await Run("compare", pa, pb, "--tolerance", "bitwise");
        Assert.Equal(1, code);
    }

    [Fact]
    public async Task Float64_files_are_compared_in_float64()
    {
        double[] b = [1.0, -2.5, 3.25, 0.0];
        double[] a = [1.0, Math.BitIncrement(-2.5), 3.25, 0.0];
        var (code, stdout, stderr) = await Run("compare", F64("a.npy", a, "4,"), F64("b.npy", b, "4,"));
        Assert.True(code == 0, stderr);
        Assert.Contains("4 float64 values of shape [4]; bitwise equal: no (1 differ)", stdout, StringComparison.Ordinal);
        Assert.Contains("0: 3  1: 1", stdout, StringComparison.Ordinal);
        Assert.Contains("worst element [1]", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_nan_is_outside_any_tolerance()
    {
        var b = Reference(16);
        var a = (float[])b.Clone();
        a[9] = float.NaN;
        var (code, stdout, _) = await Run("compare", F32("a.npy", a, 16), F32("b.npy", b, 16));
        Assert.Equal(1, code);
        Assert.Contains("1 outside the contract (1 NaN or infinite)", stdout, StringComparison.Ordinal);
        Assert.Contains("worst element [9]: A = NaN", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Shape_dtype_and_tolerance_mismatches_exit_2_naming_them()
    {
        var b = Reference(24);
        string f32 = F32("b.npy", b, 4, 6);
        var (code, _, stderr) = await Run("compare", F32("a.npy", b, 6, 4), f32);
        Assert.Equal(2, code);
        Assert.Contains("shapes differ", stderr, StringComparison.Ordinal);
        Assert.Contains("[6, 4]", stderr, StringComparison.Ordinal);

        (code, _, stderr) = await Run("compare", F64("a64.npy", [.. b.Select(x => (double)x)], "4, 6"), f32);
        Assert.Equal(2, code);
        Assert.Contains("is float64", stderr, StringComparison.Ordinal);
        Assert.Contains("is float32", stderr, StringComparison.Ordinal);

        (code, _, stderr) = await Run("compare", f32, f32, "--tolerance", "loose");
        Assert.Equal(2, code);
        Assert.Contains("--tolerance 'loose' must be contract or bitwise", stderr, StringComparison.Ordinal);

        (code, _, stderr) = await Run("compare", Path.Combine(dir, "missing.npy"), f32);
        Assert.Equal(2, code);
        Assert.Contains("missing.npy: no such file", stderr, StringComparison.Ordinal);
    }
}
