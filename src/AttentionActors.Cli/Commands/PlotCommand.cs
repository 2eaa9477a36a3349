using System.CommandLine;
using System.Globalization;
using System.Text;
using AttentionActors.Cli.Npy;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention plot</c>: lines and scatter points from .npy files as an SVG chart — for looking at
/// one-dimensional attention, such as Nadaraya–Watson kernel regression's fitted curve against its data.
/// </summary>
internal static class PlotCommand
{
    /// <summary>The most points one series may have (an SVG past this is slow to open and no clearer).</summary>
    public const int MaxPoints = 200_000;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var output = new Option<string>("--out") { Description = "The SVG file to write", Required = true };
        var lines = new Option<string[]>("--line") { Description = "A line through X.npy,Y.npy[,LABEL] (same number of values; drawn in ascending x); repeatable", AllowMultipleArgumentsPerToken = false };
        var points = new Option<string[]>("--points") { Description = "Scatter points X.npy,Y.npy[,LABEL]; repeatable", AllowMultipleArgumentsPerToken = false };
        var title = new Option<string?>("--title") { Description = "Title above the chart" };
        var xLabel = new Option<string>("--x-label") { Description = "x-axis label", DefaultValueFactory = _ => "x" };
        var yLabel = new Option<string>("--y-label") { Description = "y-axis label", DefaultValueFactory = _ => "y" };
        var command = new Command("plot", "Draw lines and points from .npy files as an SVG chart (e.g. a kernel regression's fit against its data)") { output, lines, points, title, xLabel, yLabel };
        command.SetAction(r =>
        {
            try
            {
                string path = OutputFile.Check("--out", r.GetValue(output)!);
                if (!path.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
                {
                    throw new UsageException($"--out {path}: the chart is an SVG file; give a name ending in .svg");
                }

                var series = (r.GetValue(lines) ?? []).Select(s => Load("--line", s, isLine: true))
                    .Concat((r.GetValue(points) ?? []).Select(s => Load("--points", s, isLine: false))).ToList();
                if (series.Count == 0)
                {
                    throw new UsageException("nothing to plot: give at least one --line or --points X.npy,Y.npy");
                }

                File.WriteAllText(path, new Chart(series, r.GetValue(title), r.GetValue(xLabel)!, r.GetValue(yLabel)!).ToSvg(), new UTF8Encoding(false));
                stdout.WriteLine($"plot: {series.Count} series, {series.Sum(s => s.X.Length):N0} points → {path}");
                return 0;
            }
            catch (Exception ex) when (ex is UsageException or NpyFormatException or IOException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 2;
            }
        });
        return command;
    }

    private static Series Load(string option, string spec, bool isLine)
    {
        var parts = spec.Split(',', 3);
        if (parts.Length < 2)
        {
            throw new UsageException($"{option} '{spec}' must be X.npy,Y.npy or X.npy,Y.npy,LABEL");
        }

        float[] Read(string file)
        {
            if (!File.Exists(file))
            {
                throw new UsageException($"{option}: {file} does not exist");
            }

            using var npy = NpyFile.Read(file);
            var data = npy.Data.ToArray();
            int bad = Array.FindIndex(data, x => !float.IsFinite(x));
            if (bad >= 0)
            {
                throw new UsageException($"{option}: {file} holds {data[bad]} at flat index {bad}; only finite values can be plotted");
            }

            return data;
        }

        var x = Read(parts[0]);
        var y = Read(parts[1]);
        if (x.Length != y.Length)
        {
            throw new UsageException($"{option}: {parts[0]} holds {x.Length:N0} values but {parts[1]} holds {y.Length:N0}; x and y pair up one to one");
        }

        if (x.Length == 0 || x.Length > MaxPoints)
        {
            throw new UsageException($"{option}: {parts[0]} holds {x.Length:N0} values; a series has 1 to {MaxPoints:N0}");
        }

        if (isLine)
        {
            // A curve is drawn left to right whatever order its samples came in.
            var order = Enumerable.Range(0, x.Length).OrderBy(i => x[i]).ToArray();
            (x, y) = (order.Select(i => x[i]).ToArray(), order.Select(i => y[i]).ToArray());
        }

        return new Series(x, y, parts.Length == 3 ? parts[2] : Path.GetFileNameWithoutExtension(parts[1]), isLine);
    }

    private sealed record Series(float[] X, float[] Y, string Label, bool IsLine);

    /// <summary>The SVG: axes with round-number ticks, one colour per series, a legend on the right.</summary>
    private sealed class Chart(List<Series> series, string? title, string xLabel, string yLabel)
    {
        private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
        private const int Left = 70, Top = 44, PlotWidth = 560, PlotHeight = 360;

        public string ToSvg()
        {
            var inv = CultureInfo.InvariantCulture;
            var (x0, x1, xTicks) = Axis(series.SelectMany(s => s.X));
            var (y0, y1, yTicks) = Axis(series.SelectMany(s => s.Y));
            double Px(double x) => Left + ((x - x0) / (x1 - x0) * PlotWidth);
            double Py(double y) => Top + PlotHeight - ((y - y0) / (y1 - y0) * PlotHeight);
            int legendWidth = 64 + (int)(7 * series.Max(s => s.Label.Length));
            int width = Left + PlotWidth + legendWidth, height = Top + PlotHeight + 56;
            var svg = new StringBuilder();
            svg.Append(inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"'Noto Sans', 'DejaVu Sans', sans-serif\" font-size=\"12\">\n");
            svg.Append(inv, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
            if (title is not null)
            {
                svg.Append(inv, $"<text class=\"title\" x=\"{Left}\" y=\"24\" font-size=\"14\">{Escape(title)}</text>\n");
            }

            svg.Append(inv, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{PlotWidth}\" height=\"{PlotHeight}\" fill=\"none\" stroke=\"#333\"/>\n");
            foreach (double t in xTicks)
            {
                svg.Append(inv, $"<line x1=\"{Px(t):F2}\" y1=\"{Top + PlotHeight}\" x2=\"{Px(t):F2}\" y2=\"{Top + PlotHeight + 5}\" stroke=\"#333\"/><text class=\"x-tick\" x=\"{Px(t):F2}\" y=\"{Top + PlotHeight + 18}\" text-anchor=\"middle\">{t.ToString("G6", inv)}</text>\n");
            }

            foreach (double t in yTicks)
            {
                svg.Append(inv, $"<line x1=\"{Left - 5}\" y1=\"{Py(t):F2}\" x2=\"{Left}\" y2=\"{Py(t):F2}\" stroke=\"#333\"/><text class=\"y-tick\" x=\"{Left - 8}\" y=\"{Py(t):F2}\" text-anchor=\"end\" dominant-baseline=\"middle\">{t.ToString("G6", inv)}</text>\n");
            }

            svg.Append(inv, $"<text class=\"x-label\" x=\"{Left + (PlotWidth / 2)}\" y=\"{Top + PlotHeight + 40}\" text-anchor=\"middle\">{Escape(xLabel)}</text>\n");
            svg.Append(inv, $"<text class=\"y-label\" x=\"18\" y=\"{Top + (PlotHeight / 2)}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {Top + (PlotHeight / 2)})\">{Escape(yLabel)}</text>\n");
            for (int s = 0; s < series.Count; s++)
            {
                var (xs, ys, label, isLine) = series[s];
                string colour = Palette[s % Palette.Length];
                if (isLine)
                {
                    svg.Append(inv, $"<polyline class=\"series\" data-label=\"{Escape(label)}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"");
                    for (int i = 0; i < xs.Length; i++)
                    {
                        svg.Append(inv, $"{Px(xs[i]):F2},{Py(ys[i]):F2} ");
                    }

                    svg.Append("\"/>\n");
                }
                else
                {
                    svg.Append(inv, $"<g class=\"series\" data-label=\"{Escape(label)}\" fill=\"{colour}\" fill-opacity=\"0.7\">");
                    for (int i = 0; i < xs.Length; i++)
                    {
                        svg.Append(inv, $"<circle cx=\"{Px(xs[i]):F2}\" cy=\"{Py(ys[i]):F2}\" r=\"2.5\"/>");
                    }

                    svg.Append("</g>\n");
                }

                double ly = Top + 10 + (s * 20);
                svg.Append(inv, $"<g class=\"legend-entry\">{(isLine ? $"<line x1=\"{Left + PlotWidth + 16}\" y1=\"{ly:F1}\" x2=\"{Left + PlotWidth + 40}\" y2=\"{ly:F1}\" stroke=\"{colour}\" stroke-width=\"2\"/>" : $"<circle cx=\"{Left + PlotWidth + 28}\" cy=\"{ly:F1}\" r=\"3\" fill=\"{colour}\"/>")}<text x=\"{Left + PlotWidth + 46}\" y=\"{ly:F1}\" dominant-baseline=\"middle\">{Escape(label)}</text></g>\n");
            }

            svg.Append("</svg>\n");
            return svg.ToString();
        }

        /// <summary>An axis range covering the values, widened to round ticks 1, 2 or 5 × 10^k apart (about 6 of them).</summary>
        private static (double Lo, double Hi, double[] Ticks) Axis(IEnumerable<float> values)
        {
            double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
            foreach (float v in values)
            {
                lo = Math.Min(lo, v);
                hi = Math.Max(hi, v);
            }

            if (hi - lo < 1e-30 * Math.Max(1, Math.Abs(hi)))
            {
                (lo, hi) = (lo - 0.5, hi + 0.5);
            }

            double raw = (hi - lo) / 6;
            double power = Math.Pow(10, Math.Floor(Math.Log10(raw)));
            double step = new[] { 1.0, 2, 5, 10 }.Select(m => m * power).First(s => s >= raw);
            double start = Math.Floor(lo / step) * step, end = Math.Ceiling(hi / step) * step;
            int count = (int)Math.Round((end - start) / step) + 1;
            return (start, end, Enumerable.Range(0, count).Select(i => Math.Round(start + (i * step), 12)).ToArray());
        }

        private static string Escape(string text) => System.Security.SecurityElement.Escape(text) ?? "";
    }
}
