using System.Buffers;
using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using AttentionActors.Cli.Npy;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention compare A.npy B.npy</c>: how far a result A (say, sharded) is from a reference B
/// (say, single-node): bitwise equality, max absolute and relative error, a histogram of ULP
/// distances, and the worst element's index. Exit 0 within the tolerance, 1 outside, 2 on bad input.
/// Both files are streamed in chunks, so any size compares in constant memory.
/// </summary>
internal static class CompareCommand
{
    private const int ChunkElements = 1 << 18;

    /// <summary>Upper bounds (inclusive) of the ULP histogram's buckets; the last bucket is open.</summary>
    private static readonly long[] Buckets = [0, 1, 3, 15, 255, 65535];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var a = new Argument<string>("A") { Description = "The result to check (.npy, float32 or float64)" };
        var b = new Argument<string>("B") { Description = "The reference (.npy, same shape and dtype)" };
        var tolerance = new Option<string>("--tolerance") { Description = "contract: |A − B| ≤ 2e-6 + 1e-5·|B| elementwise; bitwise: identical bits", DefaultValueFactory = _ => "contract" };
        var command = new Command("compare", "Compare a result with a reference: bitwise equality, errors, ULP histogram, worst element") { a, b, tolerance };
        command.SetAction(r => Run(r.GetValue(a)!, r.GetValue(b)!, r.GetValue(tolerance)!, stdout, stderr));
        return command;
    }

    private static int Run(string pathA, string pathB, string tolerance, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            bool bitwise = tolerance switch
            {
                "bitwise" => true,
                "contract" => false,
                _ => throw new UsageException($"--tolerance '{tolerance}' must be contract or bitwise"),
            };
            var la = NpyFile.Layout(pathA);
            var lb = NpyFile.Layout(pathB);
            if (!la.Shape.SequenceEqual(lb.Shape))
            {
                throw new UsageException($"shapes differ: {pathA} is {RunInputs.Show(la.Shape)}, {pathB} is {RunInputs.Show(lb.Shape)}");
            }

            if (la.Width != lb.Width)
            {
                throw new UsageException($"dtypes differ: {pathA} is {Dtype(la.Width)}, {pathB} is {Dtype(lb.Width)}; convert one so both hold the same type");
            }

            var stats = Compare(pathA, la.DataOffset, pathB, lb.DataOffset, la.Count, la.Width);
            Report(stats, la.Shape, la.Width, stdout);
            bool inside = bitwise ? stats.Differing == 0 : stats.Outside == 0;
            stdout.WriteLine($"compare: {(inside ? "within" : "OUTSIDE")} the {(bitwise ? "bitwise" : "contract |A − B| ≤ 2e-6 + 1e-5·|B|")} tolerance");
            return inside ? 0 : 1;
        }
        catch (Exception ex) when (ex is UsageException or NpyFormatException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"attention: {ex.Message.ReplaceLineEndings(" ")}");
            return 2;
        }
    }

    private static string Dtype(int width) => width == 4 ? "float32" : "float64";

    private sealed class Stats
    {
        public long Count { get; set; }

        public long Differing { get; set; }

        public long Outside { get; set; }

        public long NotFinite { get; set; }

        public double MaxAbs { get; set; }

        public double MaxRel { get; set; }

        /// <summary>The element with the largest excess over the contract (or the largest error when none exceeds it).</summary>
        public long Worst { get; set; } = -1;

        public double WorstScore { get; set; } = double.NegativeInfinity;

        public (double A, double B) WorstValues { get; set; }

        public long[] Histogram { get; } = new long[Buckets.Length + 1];
    }

    private static Stats Compare(string pathA, long offsetA, string pathB, long offsetB, long count, int width)
    {
        var stats = new Stats { Count = count };
        using var fa = new FileStream(pathA, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var fb = new FileStream(pathB, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        fa.Position = offsetA;
        fb.Position = offsetB;
        var ba = ArrayPool<byte>.Shared.Rent(ChunkElements * width);
        var bb = ArrayPool<byte>.Shared.Rent(ChunkElements * width);
        try
        {
            for (long done = 0; done < count;)
            {
                int n = (int)Math.Min(ChunkElements, count - done);
                fa.ReadExactly(ba, 0, n * width);
                fb.ReadExactly(bb, 0, n * width);
                var a32 = MemoryMarshal.Cast<byte, float>(ba.AsSpan(0, n * width));
                var b32 = MemoryMarshal.Cast<byte, float>(bb.AsSpan(0, n * width));
                var a64 = MemoryMarshal.Cast<byte, double>(ba.AsSpan(0, n * width));
                var b64 = MemoryMarshal.Cast<byte, double>(bb.AsSpan(0, n * width));
                for (int i = 0; i < n; i++)
                {
                    double x, y;
                    long ulps;
                    bool same;
                    if (width == 4)
                    {
                        float a = a32[i];
                        float b = b32[i];
                        same = BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
                        ulps = Math.Abs(Ordered(a) - Ordered(b));
                        (x, y) = (a, b);
                    }
                    else
                    {
                        double a = a64[i];
                        double b = b64[i];
                        same = BitConverter.DoubleToInt64Bits(a) == BitConverter.DoubleToInt64Bits(b);
                        ulps = Ordered(a, b);
                        (x, y) = (a, b);
                    }

                    Add(stats, done + i, x, y, same, ulps);
                }

                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(ba);
            ArrayPool<byte>.Shared.Return(bb);
        }

        return stats;
    }

    private static void Add(Stats s, long index, double a, double b, bool same, long ulps)
    {
        if (!same)
        {
            s.Differing++;
        }

        double score;
        if (!double.IsFinite(a) || !double.IsFinite(b))
        {
            // Identical infinities are equal; anything else non-finite is outside any tolerance.
            bool equalInfinity = same && !double.IsNaN(a);
            s.NotFinite += equalInfinity ? 0 : 1;
            s.Outside += equalInfinity ? 0 : 1;
            s.Histogram[^1] += equalInfinity ? 0 : 1;
            s.Histogram[0] += equalInfinity ? 1 : 0;
            score = equalInfinity ? 0 : double.PositiveInfinity;
        }
        else
        {
            double abs = Math.Abs(a - b);
            double bound = 2e-6 + (1e-5 * Math.Abs(b));
            s.MaxAbs = Math.Max(s.MaxAbs, abs);
            s.MaxRel = Math.Max(s.MaxRel, b == 0 ? (abs == 0 ? 0 : double.PositiveInfinity) : abs / Math.Abs(b));
            s.Outside += abs > bound ? 1 : 0;
            int bucket = 0;
            while (bucket < Buckets.Length && ulps > Buckets[bucket])
            {
                bucket++;
            }

            s.Histogram[bucket]++;
            score = abs / bound;
        }

        if (score > s.WorstScore)
        {
            s.WorstScore = score;
            s.Worst = index;
            s.WorstValues = (a, b);
        }
    }

    /// <summary>Maps a float's bits to an integer line on which adjacent floats differ by 1 (−0 and +0 coincide).</summary>
    private static long Ordered(float x)
    {
        int bits = BitConverter.SingleToInt32Bits(x);
        return bits < 0 ? (long)int.MinValue - bits : bits;
    }

    /// <summary>ULP distance of two doubles, saturating rather than overflowing.</summary>
    private static long Ordered(double a, double b)
    {
        static Int128 Line(double x)
        {
            long bits = BitConverter.DoubleToInt64Bits(x);
            return bits < 0 ? (Int128)long.MinValue - bits : bits;
        }

        var d = Line(a) - Line(b);
        d = d < 0 ? -d : d;
        return d > long.MaxValue ? long.MaxValue : (long)d;
    }

    private static void Report(Stats s, int[] shape, int width, TextWriter stdout)
    {
        var inv = CultureInfo.InvariantCulture;
        stdout.WriteLine(string.Create(inv, $"compare: {s.Count:N0} {Dtype(width)} values of shape {RunInputs.Show(shape)}; bitwise equal: {(s.Differing == 0 ? "yes" : $"no ({s.Differing:N0} differ)")}"));
        stdout.WriteLine(string.Create(inv, $"compare: max |A − B| = {s.MaxAbs:G4}, max |A − B|/|B| = {s.MaxRel:G4}; {s.Outside:N0} outside the contract{(s.NotFinite > 0 ? $" ({s.NotFinite:N0} NaN or infinite)" : "")}"));
        string[] labels = ["0", "1", "2–3", "4–15", "16–255", "256–65535", "≥ 65536"];
        stdout.WriteLine("compare: ULP distance  " + string.Join("  ", labels.Select((label, i) => string.Create(inv, $"{label}: {s.Histogram[i]:N0}"))));
        if (s.Worst >= 0 && s.Differing > 0)
        {
            stdout.WriteLine(string.Create(inv, $"compare: worst element [{string.Join(", ", Index(s.Worst, shape))}]: A = {s.WorstValues.A:R}, B = {s.WorstValues.B:R}"));
        }
    }

    private static long[] Index(long flat, int[] shape)
    {
        var index = new long[shape.Length];
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            index[d] = flat % Math.Max(shape[d], 1);
            flat /= Math.Max(shape[d], 1);
        }

        return index;
    }
}
