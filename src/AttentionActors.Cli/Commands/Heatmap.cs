using System.Globalization;
using System.Security;
using System.Text;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// A heatmap of attention weights as a self-contained SVG: one rectangle per cell (its value in
/// <c>data-value</c> and a hover title), the viridis colour scale from 0 to the largest cell, a
/// legend, axis ticks in token indices or token labels, and a title stating what is shown.
/// </summary>
internal sealed class Heatmap(float[] cells, int cellRows, int cellCols, (int Lo, int Hi) rows, (int Lo, int Hi) cols, string[]? rowLabels, string[]? colLabels, string title)
{
    /// <summary>The viridis scale at 0, 1/8, …, 1 (matplotlib's), interpolated linearly in between.</summary>
    private static readonly (byte R, byte G, byte B)[] Stops =
    [
        (0x44, 0x01, 0x54), (0x47, 0x2d, 0x7b), (0x3b, 0x52, 0x8b), (0x2c, 0x72, 0x8e), (0x21, 0x91, 0x8c),
        (0x28, 0xae, 0x80), (0x5e, 0xc9, 0x62), (0xad, 0xdc, 0x30), (0xfd, 0xe7, 0x25),
    ];

    private const string Font = "'Noto Sans CJK SC', 'Noto Sans CJK JP', 'Noto Sans', 'DejaVu Sans', sans-serif";

    /// <summary>The colour of <paramref name="fraction"/> (0 to 1) of the scale, as #rrggbb.</summary>
    public static string Colour(double fraction)
    {
        double x = Math.Clamp(double.IsFinite(fraction) ? fraction : 0, 0, 1) * (Stops.Length - 1);
        int i = Math.Min((int)x, Stops.Length - 2);
        double t = x - i;
        byte Mix(byte a, byte b) => (byte)Math.Round(a + ((b - a) * t));
        var (lo, hi) = (Stops[i], Stops[i + 1]);
        return $"#{Mix(lo.R, hi.R):x2}{Mix(lo.G, hi.G):x2}{Mix(lo.B, hi.B):x2}";
    }

    public string ToSvg()
    {
        int side = Math.Max(cellRows, cellCols);
        int px = Math.Clamp(720 / side, 4, 48);
        int width = cellCols * px, height = cellRows * px;
        var rowTicks = Ticks(cellRows, rows, rowLabels);
        var colTicks = Ticks(cellCols, cols, colLabels);
        int rowLabelWidth = 12 + (int)(7.5 * rowTicks.Select(t => TextWidth(t.Text)).DefaultIfEmpty(1).Max());
        int colLabelHeight = 12 + (int)(7.5 * 0.87 * colTicks.Select(t => TextWidth(t.Text)).DefaultIfEmpty(1).Max());
        int left = Math.Max(rowLabelWidth, 60), top = 44 + colLabelHeight;
        int legendX = left + width + 24;
        int totalWidth = legendX + 90;
        int totalHeight = top + height + 40;
        float max = cells.Length == 0 ? 0 : cells.Max();
        var svg = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        svg.Append(inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{totalWidth}\" height=\"{totalHeight}\" viewBox=\"0 0 {totalWidth} {totalHeight}\" font-family=\"{Font}\" font-size=\"12\">\n");
        svg.Append(inv, $"<rect width=\"{totalWidth}\" height=\"{totalHeight}\" fill=\"white\"/>\n");
        svg.Append(inv, $"<text class=\"title\" x=\"{left}\" y=\"20\" font-size=\"13\">{Escape(title)}</text>\n");
        svg.Append(inv, $"<text x=\"{left}\" y=\"36\" font-size=\"11\" fill=\"#555\">rows: queries · columns: keys · colour: weight a_ij = softmax_j(s_ij)</text>\n");
        svg.Append(inv, $"<g class=\"cells\" transform=\"translate({left},{top})\" shape-rendering=\"crispEdges\">\n");
        for (int r = 0; r < cellRows; r++)
        {
            for (int c = 0; c < cellCols; c++)
            {
                float value = cells[(r * cellCols) + c];
                string fill = Colour(max > 0 ? value / max : 0);
                svg.Append(inv, $"<rect class=\"cell\" x=\"{c * px}\" y=\"{r * px}\" width=\"{px}\" height=\"{px}\" fill=\"{fill}\" data-row=\"{r}\" data-col=\"{c}\" data-value=\"{value.ToString("R", inv)}\"><title>{Escape(Span(r, cellRows, rows, rowLabels))} → {Escape(Span(c, cellCols, cols, colLabels))}: {value.ToString("G4", inv)}</title></rect>\n");
            }
        }

        svg.Append("</g>\n");
        svg.Append(inv, $"<g class=\"row-ticks\" transform=\"translate({left},{top})\" text-anchor=\"end\" dominant-baseline=\"middle\">\n");
        foreach (var (cell, text) in rowTicks)
        {
            svg.Append(inv, $"<text class=\"tick\" x=\"-6\" y=\"{(cell * px) + (px / 2.0)}\">{Escape(text)}</text>\n");
        }

        svg.Append("</g>\n");
        svg.Append(inv, $"<g class=\"col-ticks\" transform=\"translate({left},{top})\">\n");
        foreach (var (cell, text) in colTicks)
        {
            double x = (cell * px) + (px / 2.0);
            svg.Append(inv, $"<text class=\"tick\" x=\"{x}\" y=\"-6\" transform=\"rotate(-60 {x} -6)\">{Escape(text)}</text>\n");
        }

        svg.Append("</g>\n");

        // The legend: the scale from 0 (bottom) to the largest cell (top).
        svg.Append("<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
        for (int s = 0; s < Stops.Length; s++)
        {
            svg.Append(inv, $"<stop offset=\"{s / (double)(Stops.Length - 1)}\" stop-color=\"{Colour(s / (double)(Stops.Length - 1))}\"/>");
        }

        svg.Append("</linearGradient></defs>\n");
        svg.Append(inv, $"<g class=\"legend\" transform=\"translate({legendX},{top})\">\n<rect width=\"16\" height=\"{height}\" fill=\"url(#scale)\" stroke=\"#333\" stroke-width=\"0.5\"/>\n");
        foreach (double f in new[] { 0, 0.25, 0.5, 0.75, 1 })
        {
            svg.Append(inv, $"<text class=\"legend-tick\" x=\"22\" y=\"{height * (1 - f)}\" dominant-baseline=\"middle\">{(max * f).ToString("G3", inv)}</text>\n");
        }

        svg.Append("</g>\n</svg>\n");
        return svg.ToString();
    }

    /// <summary>At most about 24 ticks per axis (every cell when there are that few), each naming the first token of its cell.</summary>
    private static List<(int Cell, string Text)> Ticks(int cellCount, (int Lo, int Hi) window, string[]? labels)
    {
        int step = Math.Max(1, (int)Math.Ceiling(cellCount / 24.0));
        var ticks = new List<(int, string)>();
        for (int cell = 0; cell < cellCount; cell += step)
        {
            int token = First(cell, cellCount, window);
            ticks.Add((cell, labels is null ? token.ToString(CultureInfo.InvariantCulture) : labels[token]));
        }

        return ticks;
    }

    /// <summary>The first token of cell <paramref name="cell"/>: the smallest t with ⌊t·cells / n⌋ = cell.</summary>
    private static int First(int cell, int cellCount, (int Lo, int Hi) window)
    {
        long n = window.Hi - window.Lo;
        return window.Lo + (int)((((long)cell * n) + cellCount - 1) / cellCount);
    }

    private static string Span(int cell, int cellCount, (int Lo, int Hi) window, string[]? labels)
    {
        int first = First(cell, cellCount, window);
        int end = cell + 1 == cellCount ? window.Hi : First(cell + 1, cellCount, window);
        string Name(int t) => labels is null ? t.ToString(CultureInfo.InvariantCulture) : $"{labels[t]} ({t})";
        return end - first == 1 ? Name(first) : $"{Name(first)}…{Name(end - 1)}";
    }

    /// <summary>Width in units of a Latin character: CJK characters count twice.</summary>
    private static double TextWidth(string text) => text.Sum(ch => ch >= 0x2E80 ? 2.0 : 1.0);

    private static string Escape(string text) => SecurityElement.Escape(text) ?? "";
}
