using System.Globalization;
using System.Xml.Linq;
using AttentionActors.Cli.Npy;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention plot` and the kernel regression it exists for: a Gaussian-score attention is Nadaraya–Watson regression.</summary>
public sealed class PlotCommandTests : IDisposable
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    private readonly string dir = Directory.CreateTempSubdirectory("attention-plot-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    private string Save(string name, float[] values)
    {
        NpyFile.Write(PathOf(name), values, [values.Length, 1]);
        return PathOf(name);
    }

    [Fact]
    public async Task Gaussian_attention_is_kernel_regression_and_the_plot_draws_every_series()
    {
        var rng = new Random(3);
        var xi = Enumerable.Range(0, 40).Select(_ => (float)(rng.NextDouble() * 5)).ToArray();
        var yi = xi.Select(x => (float)((2 * Math.Sin(x)) + Math.Pow(x, 0.8) + (rng.NextDouble() - 0.5))).ToArray();
        var grid = Enumerable.Range(0, 101).Select(i => i * 0.05f).ToArray();
        Save("xi.npy", xi);
        Save("yi.npy", yi);
        Save("grid.npy", grid);
        const float Sigma = 0.4f;
        var (code, _, err) = await Run("run", "--q", PathOf("grid.npy"), "--k", PathOf("xi.npy"), "--v", PathOf("yi.npy"), "--score", "gaussian", "--sigma", "0.4", "--out", PathOf("fit.npy"), "--quiet");
        Assert.True(code == 0, err);

        // f(x) = Σ_i K(x, x_i) y_i / Σ_i K(x, x_i) with K the Gaussian kernel, in float64.
        using (var fit = NpyFile.Read(PathOf("fit.npy")))
        {
            for (int g = 0; g < grid.Length; g++)
            {
                double num = 0, den = 0;
                for (int i = 0; i < xi.Length; i++)
                {
                    double d = (double)grid[g] - xi[i];
                    double w = Math.Exp(-d * d / (2.0 * Sigma * Sigma));
                    num += w * yi[i];
                    den += w;
                }

                double expected = num / den;
                Assert.True(Math.Abs(fit.Data.Span[g] - expected) <= 2e-6 + (1e-5 * Math.Abs(expected)), $"f({grid[g]}) = {fit.Data.Span[g]:R}, Nadaraya–Watson gives {expected:R}");
            }
        }

        var (plotCode, _, plotErr) = await Run("plot", "--out", PathOf("fit.svg"), "--title", "kernel regression", "--points", $"{PathOf("xi.npy")},{PathOf("yi.npy")},data",
            "--line", $"{PathOf("grid.npy")},{PathOf("fit.npy")},σ = 0.4");
        Assert.True(plotCode == 0, plotErr);
        var root = XDocument.Load(PathOf("fit.svg")).Root!;
        Assert.Equal(Svg + "svg", root.Name);
        var line = root.Descendants(Svg + "polyline").Single();
        Assert.Equal("σ = 0.4", line.Attribute("data-label")!.Value);
        Assert.Equal(grid.Length, line.Attribute("points")!.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal(xi.Length, root.Descendants(Svg + "circle").Count(c => c.Parent!.Attribute("class")?.Value == "series"));
        Assert.Equal(["data", "σ = 0.4"], root.Descendants(Svg + "g").Where(g => (string?)g.Attribute("class") == "legend-entry").Select(g => g.Element(Svg + "text")!.Value).Order().ToArray());
        Assert.Equal("kernel regression", root.Descendants(Svg + "text").Single(t => (string?)t.Attribute("class") == "title").Value);

        // The axes cover the data: the outer x ticks bracket [0, 5].
        var xTicks = root.Descendants(Svg + "text").Where(t => (string?)t.Attribute("class") == "x-tick").Select(t => double.Parse(t.Value, CultureInfo.InvariantCulture)).ToList();
        Assert.True(xTicks.Min() <= grid.Min() && xTicks.Max() >= grid.Max(), $"x ticks {string.Join(", ", xTicks)} do not cover [0, 5]");
    }

    [Fact]
    public async Task Mismatched_missing_or_non_finite_series_exit_2_naming_the_file()
    {
        Save("a.npy", [1, 2, 3]);
        Save("b.npy", [1, 2]);
        Save("nan.npy", [1, float.NaN, 3]);
        var cases = new (string[] Args, string Expected)[]
        {
            (["--line", $"{PathOf("a.npy")},{PathOf("b.npy")}"], "holds 3 values but"),
            (["--points", $"{PathOf("a.npy")},{PathOf("none.npy")}"], "none.npy does not exist"),
            (["--line", $"{PathOf("a.npy")},{PathOf("nan.npy")}"], "nan.npy holds NaN at flat index 1"),
            (["--line", PathOf("a.npy")], "must be X.npy,Y.npy"),
            ([], "nothing to plot"),
        };
        foreach (var (args, expected) in cases)
        {
            var (code, _, err) = await Run(["plot", "--out", PathOf("p.svg"), .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {err}");
            Assert.Contains(expected, err, StringComparison.Ordinal);
        }

        Assert.False(File.Exists(PathOf("p.svg")));
    }
}
