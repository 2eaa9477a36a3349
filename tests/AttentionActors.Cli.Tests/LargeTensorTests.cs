using AttentionActors.Cli.Npy;
using AttentionActors.Kernels.Tests;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>
/// Tensors of more values than one buffer addresses (2³¹ − 1): .npy files mapped in segments of
/// whole planes, read and written in place, and a real job over a key tensor past that limit.
/// </summary>
public sealed class LargeTensorTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-large-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(6)]
    public void A_file_mapped_in_segments_reads_and_writes_the_values_of_the_whole_file(int planesPerSegment)
    {
        var whole = TestData.Normal("K", 51, 2, 3, 19, 8);
        NpyFile.Write(PathOf("k.npy"), whole.Data.Span, [2, 3, 19, 8]);
        using (var file = NpyFile.Read(PathOf("k.npy"), planesPerSegment * 19 * 8))
        {
            Assert.Equal((6 + planesPerSegment - 1) / planesPerSegment, file.Segments.Count);
            var tensor = file.Tensor("K", 2, 3, 19, 8);
            for (int b = 0; b < 2; b++)
            {
                for (int h = 0; h < 3; h++)
                {
                    TestData.AssertBitwise(whole.Rows(b, h, 0, 19).Span, tensor.Rows(b, h, 0, 19).Span, $"plane ({b}, {h}) in segments of {planesPerSegment}");
                }
            }
        }

        // Written through segments, read back whole: every row lands at its place in the file.
        using (var created = NpyFile.Create(PathOf("out.npy"), [2, 3, 19, 8], planesPerSegment * 19 * 8))
        {
            var tensor = created.Tensor("out", 2, 3, 19, 8);
            for (int b = 0; b < 2; b++)
            {
                for (int h = 0; h < 3; h++)
                {
                    whole.Rows(b, h, 0, 19).Span.CopyTo(tensor.Rows(b, h, 0, 19).Span);
                }
            }
        }

        using var back = NpyFile.Read(PathOf("out.npy"));
        TestData.AssertBitwise(whole.Data.Span, back.Data.Span, "written through segments");
    }

    [Fact]
    public void A_plane_larger_than_a_segment_is_refused_by_name()
    {
        NpyFile.Write(PathOf("q.npy"), new float[2 * 40 * 8], [2, 40, 8]);
        var ex = Assert.Throws<NpyFormatException>(() => NpyFile.Read(PathOf("q.npy"), 100));
        Assert.Contains("[40, 8] plane holds 320 values", ex.Message, StringComparison.Ordinal);

        // The refused file is not left mapped: it can be opened for writing alone.
        using (File.Open(PathOf("q.npy"), FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
        }

        using var file = NpyFile.Read(PathOf("q.npy"), 320);
        var whole = Assert.Throws<NpyFormatException>(() => file.Data);
        Assert.Contains("2 segments", whole.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// K holds 260 heads × 65,536 keys × 128 = 2,181,038,080 values, past 2³¹ − 1: a sparse file
    /// whose first 64 keys per head are random and the rest zero. Queries 0..63 under a top-left
    /// causal mask see only those 64 keys, so the job equals, bit for bit, the same job on files
    /// cut to 64 keys — whose values for heads 256–259 lie past the 2³¹st value of the large file.
    /// </summary>
    [Fact]
    public async Task A_key_tensor_past_two_to_the_31_values_runs_from_a_mapped_file_and_gives_the_bits_of_the_keys_it_sees()
    {
        const int Heads = 260, Keys = 65536, Seen = 64, Dim = 128, ValueDim = 16;
        var q = TestData.Normal("Q", 52, 1, Heads, Seen, Dim);
        var kSeen = TestData.Normal("K", 53, 1, Heads, Seen, Dim);
        var vSeen = TestData.Normal("V", 54, 1, Heads, Seen, ValueDim);
        NpyFile.Write(PathOf("q.npy"), q.Data.Span, [1, Heads, Seen, Dim]);
        NpyFile.Write(PathOf("k64.npy"), kSeen.Data.Span, [1, Heads, Seen, Dim]);
        NpyFile.Write(PathOf("v64.npy"), vSeen.Data.Span, [1, Heads, Seen, ValueDim]);
        foreach (var (name, seen, dim) in new[] { ("k.npy", kSeen, Dim), ("v.npy", vSeen, ValueDim) })
        {
            using var file = NpyFile.Create(PathOf(name), [1, Heads, Keys, dim]);
            var tensor = file.Tensor(name, 1, Heads, Keys, dim);
            for (int h = 0; h < Heads; h++)
            {
                seen.Rows(0, h, 0, Seen).Span.CopyTo(tensor.Rows(0, h, 0, Seen).Span);
            }
        }

        using (var k = NpyFile.Read(PathOf("k.npy")))
        {
            Assert.True(k.Count > int.MaxValue && k.Segments.Count == 2, $"K holds {k.Count:N0} values in {k.Segments.Count} segments");
        }

        string[] common = ["run", "--q", PathOf("q.npy"), "--causal", "top-left", "--block", "64", "--workers", "2", "--quiet"];
        var (code, _, err) = await Run([.. common, "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), "--out", PathOf("out.npy"), "--lse-out", PathOf("lse.npy")]);
        Assert.True(code == 0, err);
        (code, _, err) = await Run([.. common, "--k", PathOf("k64.npy"), "--v", PathOf("v64.npy"), "--out", PathOf("out64.npy"), "--lse-out", PathOf("lse64.npy"), "--single-node"]);
        Assert.True(code == 0, err);
        using (var big = NpyFile.Read(PathOf("out.npy")))
        using (var small = NpyFile.Read(PathOf("out64.npy")))
        {
            TestData.AssertBitwise(small.Data.Span, big.Data.Span, "output over 65,536 keys against 64");
        }

        using (var big = NpyFile.Read(PathOf("lse.npy")))
        using (var small = NpyFile.Read(PathOf("lse64.npy")))
        {
            TestData.AssertBitwise(small.Data.Span, big.Data.Span, "lse");
        }

        // The ways of running that need whole arrays say so before reading anything.
        foreach (var flag in new[] { "--single-node", "--verify" })
        {
            (code, _, err) = await Run([.. common, "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), flag]);
            Assert.True(code == 2 && err.Contains("K (k.npy) holds 2,181,038,080 values", StringComparison.Ordinal), $"{flag}: exit {code}: {err}");
        }
    }
}
