using System.Globalization;
using System.Xml.Linq;
using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Reference;
using AttentionActors.Kernels.Tests;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention inspect` in-process: entropy and coverage files, weight windows, the SVG heatmap and bad input.</summary>
public sealed class InspectCommandTests : IDisposable
{
    private static readonly string[] Tokens = ["今天", "天气", "真", "好", "，", "我", "想", "出", "去", "玩"];

    private readonly string dir = Directory.CreateTempSubdirectory("attention-inspect-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    private string Write(string name, AttentionTensor t, int[] shape)
    {
        NpyFile.Write(PathOf(name), t.Data.Span, shape);
        return PathOf(name);
    }

    [Fact]
    public async Task Entropy_and_coverage_files_match_the_float64_weight_matrix_and_do_not_depend_on_the_workers()
    {
        var (q, k, v) = TestData.Qkv(21, 2, 4, 2, 130, 170, 16, 16);
        string[] files = ["--q", Write("q.npy", q, [2, 4, 130, 16]), "--k", Write("k.npy", k, [2, 2, 170, 16]), "--v", Write("v.npy", v, [2, 2, 170, 16])];
        string[] window = ["--batch-index", "1", "--rows", "7:125", "--cols", "3:166", "--size", "20"];
        var (code, said, err) = await Run(["inspect", .. files, "--causal", "bottom-right", "--block", "32", "--workers", "3", "--max-shard-bytes", "65536", "--entropy-out", PathOf("e.npy"), "--coverage-out", PathOf("c.npy"), .. window, "--weights-out", PathOf("w.npy"), "--heatmap", PathOf("h.svg")]);
        Assert.True(code == 0, err);
        Assert.Matches(@"the coverage and 2 weights passes took [0-9.]+ s on the embedded pipeline \(3 workers\)", said);
        var (code1, _, err1) = await Run(["inspect", .. files, "--causal", "bottom-right", "--block", "32", "--single-node", "--workers", "1", "--entropy-out", PathOf("e1.npy"), "--coverage-out", PathOf("c1.npy"), .. window, "--weights-out", PathOf("w1.npy"), "--heatmap", PathOf("h1.svg"), "--quiet"]);
        Assert.True(code1 == 0, err1);

        // The weight window and the heatmap's cells ran as weights passes on the workers: the same bits as one thread.
        using (var w = NpyFile.Read(PathOf("w.npy")))
        using (var w1 = NpyFile.Read(PathOf("w1.npy")))
        {
            Assert.Equal([118, 163], w.Shape);
            TestData.AssertBitwise(w1.Data.Span, w.Data.Span, "weights window: 3 pipeline workers vs one thread");
        }

        Assert.Equal(File.ReadAllText(PathOf("h1.svg")), File.ReadAllText(PathOf("h.svg")));

        using var entropy = NpyFile.Read(PathOf("e.npy"));
        using var coverage = NpyFile.Read(PathOf("c.npy"));
        Assert.Equal([2, 4, 130], entropy.Shape);
        Assert.Equal([2, 2, 170], coverage.Shape);
        using (var e1 = NpyFile.Read(PathOf("e1.npy")))
        using (var c1 = NpyFile.Read(PathOf("c1.npy")))
        {
            TestData.AssertBitwise(e1.Data.Span, entropy.Data.Span, "entropy: 3 pipeline workers vs one thread");
            TestData.AssertBitwise(c1.Data.Span, coverage.Data.Span, "coverage: 3 pipeline workers vs one thread");
        }

        var options = new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 };
        var (refEntropy, refCoverage) = ReferenceAttention.Inspect(q, k, options);
        var lse = ReferenceAttention.Compute(q, k, v, options).Lse;
        for (int i = 0; i < refEntropy.Length; i++)
        {
            double tolerance = 2e-6 + (1e-5 * (Math.Abs(refEntropy[i]) + Math.Abs(lse[i])));
            Assert.True(Math.Abs(entropy.Data.Span[i] - refEntropy[i]) <= tolerance, $"entropy[{i}] = {entropy.Data.Span[i]:R}, reference {refEntropy[i]:R}");
        }

        TestData.AssertClose(coverage.Data.Span, refCoverage, "coverage.npy");
    }

    [Fact]
    public async Task The_heatmap_is_well_formed_svg_with_every_cell_its_colour_the_labels_and_a_title()
    {
        var (q, k, v) = TestData.Qkv(22, 1, 2, 2, 10, 10, 8, 8);
        File.WriteAllLines(PathOf("tokens.txt"), Tokens);
        var (code, output, err) = await Run("inspect", "--q", Write("q.npy", q, [2, 10, 8]), "--k", Write("k.npy", k, [2, 10, 8]), "--v", Write("v.npy", v, [2, 10, 8]),
            "--causal", "--head", "1", "--heatmap", PathOf("map.svg"), "--q-labels", PathOf("tokens.txt"), "--k-labels", PathOf("tokens.txt"), "--weights-out", PathOf("w.npy"));
        Assert.True(code == 0, err);
        Assert.Contains("entropy mean", output, StringComparison.Ordinal);

        var svg = XDocument.Load(PathOf("map.svg"));
        XNamespace ns = "http://www.w3.org/2000/svg";
        var root = svg.Root!;
        Assert.Equal(ns + "svg", root.Name);
        Assert.True(int.Parse(root.Attribute("width")!.Value, CultureInfo.InvariantCulture) >= 10 * 48, $"width {root.Attribute("width")!.Value}");
        var cells = root.Descendants(ns + "rect").Where(r => (string?)r.Attribute("class") == "cell").ToList();
        Assert.Equal(100, cells.Count);
        string title = root.Descendants(ns + "text").Single(t => (string?)t.Attribute("class") == "title").Value;
        Assert.Contains("head 1", title, StringComparison.Ordinal);
        Assert.Contains("rows 0:10 × keys 0:10", title, StringComparison.Ordinal);
        Assert.Contains("not pooled", title, StringComparison.Ordinal);
        Assert.Contains("[1, 2, 10, 8]", title, StringComparison.Ordinal);
        var ticks = root.Descendants(ns + "text").Where(t => (string?)t.Attribute("class") == "tick").Select(t => t.Value).ToList();
        foreach (string token in Tokens)
        {
            Assert.Equal(2, ticks.Count(t => t == token));
        }

        // Each cell holds the weight of its query and key; the causal upper triangle is 0 (the scale's
        // bottom, #440154) and row 0's only visible key has weight 1 (the largest: the top, #fde725).
        using var weights = NpyFile.Read(PathOf("w.npy"));
        foreach (var cell in cells)
        {
            int r = int.Parse(cell.Attribute("data-row")!.Value, CultureInfo.InvariantCulture);
            int c = int.Parse(cell.Attribute("data-col")!.Value, CultureInfo.InvariantCulture);
            float value = float.Parse(cell.Attribute("data-value")!.Value, CultureInfo.InvariantCulture);
            Assert.Equal(weights.Data.Span[(r * 10) + c], value);
            if (c > r)
            {
                Assert.Equal(0f, value);
                Assert.Equal("#440154", cell.Attribute("fill")!.Value);
            }
        }

        var first = cells.Single(c => c.Attribute("data-row")!.Value == "0" && c.Attribute("data-col")!.Value == "0");
        Assert.Equal(1f, float.Parse(first.Attribute("data-value")!.Value, CultureInfo.InvariantCulture));
        Assert.Equal("#fde725", first.Attribute("fill")!.Value);
    }

    [Fact]
    public async Task Pooled_heatmaps_have_at_most_size_cells_a_side_each_the_max_of_its_block()
    {
        var (code, _, err) = await Run("inspect", "--random", "--seq", "300", "--dim", "16", "--heads", "2", "--causal", "--rows", "100:300", "--cols", ":150",
            "--size", "20", "--pool", "max", "--heatmap", PathOf("pooled.svg"), "--weights-out", PathOf("w.npy"), "--quiet");
        Assert.True(code == 0, err);
        XNamespace ns = "http://www.w3.org/2000/svg";
        var cells = XDocument.Load(PathOf("pooled.svg")).Root!.Descendants(ns + "rect").Where(r => (string?)r.Attribute("class") == "cell").ToList();
        Assert.Equal(20 * 20, cells.Count);
        using var weights = NpyFile.Read(PathOf("w.npy"));
        Assert.Equal([200, 150], weights.Shape);
        foreach (var cell in cells)
        {
            int r = int.Parse(cell.Attribute("data-row")!.Value, CultureInfo.InvariantCulture);
            int c = int.Parse(cell.Attribute("data-col")!.Value, CultureInfo.InvariantCulture);
            float max = 0;
            for (int i = r * 10; i < (r + 1) * 10; i++)
            {
                for (int j = (int)Math.Ceiling(c * 7.5); j < Math.Ceiling((c + 1) * 7.5); j++)
                {
                    max = Math.Max(max, weights.Data.Span[(i * 150) + j]);
                }
            }

            Assert.Equal(max, float.Parse(cell.Attribute("data-value")!.Value, CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public async Task Bad_windows_heads_and_label_files_exit_2_naming_the_problem()
    {
        File.WriteAllLines(PathOf("short.txt"), Tokens[..4]);
        string[] job = ["inspect", "--random", "--seq", "10", "--dim", "8", "--heads", "2"];
        var cases = new (string[] Args, string Expected)[]
        {
            (["--rows", "5:3", "--heatmap", PathOf("x.svg")], "--rows '5:3' must be a:b"),
            (["--cols", "0:11", "--heatmap", PathOf("x.svg")], "≤ 10"),
            (["--head", "2", "--heatmap", PathOf("x.svg")], "--head 2 is outside the 2 query heads"),
            (["--q-labels", PathOf("short.txt"), "--heatmap", PathOf("x.svg")], "has 4 lines; the 10 query tokens"),
            (["--k-labels", PathOf("none.txt"), "--heatmap", PathOf("x.svg")], "none.txt does not exist"),
            (["--heatmap", PathOf("x.png")], "give a name ending in .svg"),
            (["--size", "1", "--heatmap", PathOf("x.svg")], "--size 1 must be between 2 and 1024"),
        };
        foreach (var (args, expected) in cases)
        {
            var (code, _, err) = await Run([.. job, .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {err}");
            Assert.Contains(expected, err, StringComparison.Ordinal);
        }

        var (bigCode, _, bigErr) = await Run("inspect", "--random", "--seq", "9000", "--dim", "8", "--heads", "1", "--weights-out", PathOf("big.npy"), "--dry-run");
        Assert.Equal(2, bigCode);
        Assert.Contains("81,000,000 cells, over the 67,108,864", bigErr, StringComparison.Ordinal);
        Assert.False(File.Exists(PathOf("x.svg")));
    }
}
