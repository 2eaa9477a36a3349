using AttentionActors.Cli.Commands;

namespace AttentionActors.Cli.Tests;

/// <summary>The generator of <c>--random</c> inputs: uniform, reproducible, the same in parallel chunks as in one.</summary>
public sealed class UniformFillTests
{
    private const int Chunk = 1 << 18;

    private static float[] Filled(int length, int seed = 5, int stream = 0, float amplitude = 1.7f)
    {
        var data = new float[length];
        UniformFill.Fill(data, seed, stream, amplitude);
        return data;
    }

    [Fact]
    public void Values_are_uniform_in_the_half_open_range_and_uncorrelated()
    {
        var x = Filled((4 * Chunk) + 5);
        Assert.All(x, v => Assert.True(v >= -1.7f && v < 1.7f, $"value {v} outside [−1.7, 1.7)"));
        double n = x.Length, mean = x.Sum(v => (double)v) / n;
        double variance = x.Sum(v => (v - mean) * (v - mean)) / n;
        double lag = Enumerable.Range(1, x.Length - 1).Sum(i => (double)x[i] * x[i - 1]) / (n - 1) / variance;

        // Uniform on [−a, a): mean 0 and variance a²/3 (0.963); the standard error of the mean is about 0.0011 here.
        Assert.True(Math.Abs(mean) < 0.006, $"mean {mean}");
        Assert.True(Math.Abs(variance - (1.7 * 1.7 / 3)) < 0.01, $"variance {variance}, expected {1.7 * 1.7 / 3}");
        Assert.True(Math.Abs(lag) < 0.006, $"correlation of neighbours {lag}");
        var bins = new int[10];
        foreach (var v in x)
        {
            bins[(int)((v + 1.7f) / 0.34f)]++;
        }

        Assert.All(bins, b => Assert.True(Math.Abs(b - (n / 10)) < n / 100, $"bins {string.Join(", ", bins)}"));
    }

    [Fact]
    public void A_tensors_values_do_not_depend_on_its_length_or_the_chunks_it_fills_in()
    {
        // A tensor of 2^20 values or more is filled by the vector loop (where there is one), a shorter
        // one by the scalar loop alone: the prefixes below compare the two as well.
        var whole = Filled((4 * Chunk) + 5);
        foreach (int length in new[] { 1, 1000, Chunk - 1, Chunk + 7, (2 * Chunk) + 1 })
        {
            var part = Filled(length);
            Assert.True(part.AsSpan().SequenceEqual(whole.AsSpan(0, length)), $"the first {length} values differ from those of a longer tensor");
        }

        // Each parallel chunk continues the sequence rather than repeating the first chunk's values.
        for (int c = 1; c < 5; c++)
        {
            Assert.False(whole.AsSpan(c * Chunk, 5).SequenceEqual(whole.AsSpan(0, 5)), $"chunk {c} starts as chunk 0 does");
            Assert.False(whole.AsSpan(c * Chunk, 5).SequenceEqual(whole.AsSpan((c * Chunk) - 5, 5)), $"chunk {c} repeats the values before it");
        }

        Assert.Equal(whole, Filled(whole.Length));
    }

    [Fact]
    public void Seeds_and_streams_give_different_values()
    {
        var a = Filled(4096, seed: 0, stream: 0);
        foreach (var (seed, stream) in new[] { (1, 0), (0, 1), (0, 2), (-1, 0), (1 << 20, 0) })
        {
            var b = Filled(4096, seed, stream);
            int same = Enumerable.Range(0, a.Length).Count(i => a[i] == b[i]);
            Assert.True(same < 8, $"seed {seed}, stream {stream}: {same} of {a.Length} values equal those of seed 0, stream 0");
        }
    }
}
