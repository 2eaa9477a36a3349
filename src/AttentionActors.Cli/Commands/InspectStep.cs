using System.Globalization;
using System.Text;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>Inspection passes run after the attention: the coverage (if asked for), each weight window's cells, their time and where they ran.</summary>
internal sealed record InspectPasses(float[]? Coverage, IReadOnlyDictionary<WeightsWindow, float[]> Weights, TimeSpan Took, string Where);

/// <summary>
/// The inspection pass of <c>attention inspect</c>, after the attention itself: checks everything it
/// was asked for before any work (<see cref="Check"/>), then computes and writes it (<see cref="Run"/>).
/// </summary>
internal sealed class InspectStep
{
    /// <summary>The largest weight window written as .npy: 64M cells (256 MiB).</summary>
    public const long MaxWindowCells = WeightsWindow.MaxCells;

    private InspectStep(InspectRequest request, AttentionGeometry g)
    {
        Request = request;
        Geometry = g;
    }

    private InspectRequest Request { get; }

    private AttentionGeometry Geometry { get; }

    private string? EntropyPath { get; init; }

    private string? CoveragePath { get; init; }

    private string? WeightsPath { get; init; }

    private string? HeatmapPath { get; init; }

    private (int Lo, int Hi) RowWindow { get; init; }

    private (int Lo, int Hi) ColWindow { get; init; }

    private string[]? QLabels { get; init; }

    private string[]? KLabels { get; init; }

    /// <summary>Validates the request against the job's shapes: paths, windows, head, batch, sizes and label files.</summary>
    public static InspectStep Check(InspectRequest request, AttentionGeometry g)
    {
        var rows = Window("--rows", request.Rows, g.QuerySeq, "query rows");
        var cols = Window("--cols", request.Cols, g.KeySeq, "keys");
        if (request.Head is { } h && (h < 0 || h >= g.Heads))
        {
            throw new UsageException($"--head {h} is outside the {g.Heads} query heads [0, {g.Heads})");
        }

        if (request.BatchIndex < 0 || request.BatchIndex >= g.Batch)
        {
            throw new UsageException($"--batch-index {request.BatchIndex} is outside the batch [0, {g.Batch})");
        }

        if (request.Size is < 2 or > 1024)
        {
            throw new UsageException($"--size {request.Size} must be between 2 and 1024 cells a side");
        }

        long cells = (long)(rows.Hi - rows.Lo) * (cols.Hi - cols.Lo);
        if (request.WeightsOut is not null && cells > MaxWindowCells)
        {
            throw new UsageException($"--weights-out: the window {rows.Lo}:{rows.Hi} × {cols.Lo}:{cols.Hi} has {cells:N0} cells, over the {MaxWindowCells:N0} a .npy window may hold; narrow --rows/--cols (a --heatmap pools any window)");
        }

        if (request.Heatmap is { } svg && !svg.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException($"--heatmap {svg}: the heatmap is an SVG file; give a name ending in .svg");
        }

        return new InspectStep(request, g)
        {
            EntropyPath = request.EntropyOut is { } e ? OutputFile.Check("--entropy-out", e) : null,
            CoveragePath = request.CoverageOut is { } c ? OutputFile.Check("--coverage-out", c) : null,
            WeightsPath = request.WeightsOut is { } w ? OutputFile.Check("--weights-out", w) : null,
            HeatmapPath = request.Heatmap is { } m ? OutputFile.Check("--heatmap", m) : null,
            RowWindow = rows,
            ColWindow = cols,
            QLabels = request.QLabels is { } ql ? Labels("--q-labels", ql, g.QuerySeq, "query") : null,
            KLabels = request.KLabels is { } kl ? Labels("--k-labels", kl, g.KeySeq, "key") : null,
        };
    }

    /// <summary>Whether the coverage pass was asked for (<c>--coverage-out</c>): the runner computes it as a second job and hands it to <see cref="Run"/>.</summary>
    public bool WantsCoverage => CoveragePath is not null;

    /// <summary>
    /// The weight windows asked for: the unpooled window of <c>--weights-out</c> and the pooled one of
    /// <c>--heatmap</c>. The runner computes each as a weights pass and hands the cells to <see cref="Run"/>.
    /// </summary>
    public IReadOnlyList<WeightsWindow> WeightWindows
    {
        get
        {
            var windows = new List<WeightsWindow>();
            if (WeightsPath is not null)
            {
                windows.Add(WeightsWindowOf(RowWindow.Hi - RowWindow.Lo, ColWindow.Hi - ColWindow.Lo, WeightPooling.Mean));
            }

            if (HeatmapPath is not null)
            {
                windows.Add(WeightsWindowOf(Math.Min(Request.Size, RowWindow.Hi - RowWindow.Lo), Math.Min(Request.Size, ColWindow.Hi - ColWindow.Lo), Request.Pool));
            }

            return windows;
        }
    }

    /// <summary>
    /// Writes what was asked for from the attention's entropy and the passes the runner computed
    /// (<paramref name="passes"/>): the .npy outputs go into <paramref name="outputs"/>, the heatmap
    /// is written, and the summary printed.
    /// </summary>
    public void Run(AttentionProblem problem, AttentionResult result, InspectPasses passes, int[] leading, List<OutputFile> outputs, TextWriter stdout, bool quiet)
    {
        bool coverage = CoveragePath is not null;
        var entropy = result.Entropy ?? throw new InvalidOperationException("the attention pass returned no entropy although the job asked for it");
        var inspection = new InspectionResult(entropy, coverage ? passes.Coverage : null);
        if (EntropyPath is not null)
        {
            outputs.Add(OutputFile.Write(EntropyPath, inspection.Entropy, [.. leading, problem.QuerySeq]));
        }

        if (CoveragePath is not null)
        {
            int[] kLeading = leading.Length switch { 0 => [], 1 => [problem.KvHeads], _ => [problem.Batch, problem.KvHeads] };
            outputs.Add(OutputFile.Write(CoveragePath, inspection.Coverage!, [.. kLeading, problem.KeySeq]));
        }

        int rows = RowWindow.Hi - RowWindow.Lo, cols = ColWindow.Hi - ColWindow.Lo;
        if (WeightsPath is not null)
        {
            outputs.Add(OutputFile.Write(WeightsPath, passes.Weights[WeightsWindowOf(rows, cols, WeightPooling.Mean)], [rows, cols]));
        }

        if (HeatmapPath is not null)
        {
            int cellRows = Math.Min(Request.Size, rows), cellCols = Math.Min(Request.Size, cols);
            var cells = passes.Weights[WeightsWindowOf(cellRows, cellCols, Request.Pool)];
            var map = new Heatmap(cells, cellRows, cellCols, RowWindow, ColWindow, QLabels, KLabels, Title(problem, cellRows, cellCols));
            File.WriteAllText(HeatmapPath, map.ToSvg(), new UTF8Encoding(false));
        }

        int count = (coverage ? 1 : 0) + WeightWindows.Count;
        if (!quiet)
        {
            string names = string.Join(" and ", new[] { coverage ? "coverage" : null, WeightWindows.Count switch { 0 => null, 1 => "weights", int n => $"{n} weights" } }.Where(n => n is not null));
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"inspect: entropy computed with the attention{(count > 0 ? $"; the {names} pass{(count > 1 ? "es" : "")} took {passes.Took.TotalSeconds:F3} s on {passes.Where}" : "")}"));
            Summary(problem, inspection, stdout);
        }
    }

    private WeightsWindow WeightsWindowOf(int cellRows, int cellCols, WeightPooling pooling)
        => new(Request.BatchIndex, Request.Head, RowWindow.Lo, RowWindow.Hi, ColWindow.Lo, ColWindow.Hi, cellRows, cellCols, pooling);

    private string Title(AttentionProblem p, int cellRows, int cellCols)
    {
        int rows = RowWindow.Hi - RowWindow.Lo, cols = ColWindow.Hi - ColWindow.Lo;
        string head = Request.Head is { } h ? $"head {h}" : $"mean of {p.Heads} heads";
        string pooled = cellRows == rows && cellCols == cols ? "not pooled" : $"{Request.Pool.ToString().ToLowerInvariant()}-pooled to {cellRows}×{cellCols} cells";
        string batch = p.Batch > 1 ? $", batch {Request.BatchIndex}" : "";
        return $"attention weights: Q [{p.Batch}, {p.Heads}, {p.QuerySeq}, {p.KeyDim}], K [{p.Batch}, {p.KvHeads}, {p.KeySeq}, {p.KeyDim}]; {head}{batch}; rows {RowWindow.Lo}:{RowWindow.Hi} × keys {ColWindow.Lo}:{ColWindow.Hi}; {pooled}";
    }

    /// <summary>Per (batch, head): mean, min and max entropy, and with coverage the three most-covered keys of its key head.</summary>
    private static void Summary(AttentionProblem p, InspectionResult inspection, TextWriter stdout)
    {
        const int MaxLines = 32;
        stdout.WriteLine(inspection.Coverage is null
            ? "batch  head   entropy mean     min      max   (nats; ln Nk = " + Math.Log(Math.Max(p.KeySeq, 1)).ToString("F3", CultureInfo.InvariantCulture) + ")"
            : "batch  head   entropy mean     min      max   most-covered keys (coverage)");
        int lines = 0;
        for (int b = 0; b < p.Batch; b++)
        {
            for (int h = 0; h < p.Heads; h++)
            {
                if (lines++ == MaxLines)
                {
                    stdout.WriteLine($"… {(p.Batch * p.Heads) - MaxLines} more heads (all of them are in --entropy-out)");
                    return;
                }

                var e = inspection.Entropy.AsSpan((int)((((long)b * p.Heads) + h) * p.QuerySeq), p.QuerySeq);
                double sum = 0;
                float min = float.PositiveInfinity, max = float.NegativeInfinity;
                foreach (float x in e)
                {
                    sum += x;
                    min = Math.Min(min, x);
                    max = Math.Max(max, x);
                }

                string top = "";
                if (inspection.Coverage is { } c)
                {
                    var keys = c.AsSpan((int)((((long)b * p.KvHeads) + (h / p.GroupSize)) * p.KeySeq), p.KeySeq).ToArray();
                    top = string.Join("  ", Enumerable.Range(0, keys.Length).OrderByDescending(j => keys[j]).ThenBy(j => j).Take(3)
                        .Select(j => string.Create(CultureInfo.InvariantCulture, $"{j} ({keys[j]:G4})")));
                }

                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{b,5}  {h,4}  {(e.Length == 0 ? 0 : sum / e.Length),12:F4}  {(e.Length == 0 ? 0 : min),7:F4}  {(e.Length == 0 ? 0 : max),7:F4}   {top}"));
            }
        }
    }

    /// <summary>Parses "a:b" (either end may be left out) into a half-open range inside [0, length).</summary>
    private static (int Lo, int Hi) Window(string option, string? text, int length, string what)
    {
        if (text is null)
        {
            return length == 0 ? throw new UsageException($"there are no {what} to inspect") : (0, length);
        }

        var parts = text.Split(':');
        int lo = 0, hi = length;
        bool ok = parts.Length == 2
            && (parts[0].Length == 0 || int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out lo))
            && (parts[1].Length == 0 || int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out hi));
        if (!ok || lo >= hi || hi > length)
        {
            throw new UsageException($"{option} '{text}' must be a:b with 0 ≤ a < b ≤ {length} ({what})");
        }

        return (lo, hi);
    }

    private static string[] Labels(string option, string path, int count, string what)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"{option} {path} does not exist");
        }

        string[] lines;
        try
        {
            lines = File.ReadAllLines(path, new UTF8Encoding(false, throwOnInvalidBytes: true));
        }
        catch (DecoderFallbackException)
        {
            throw new UsageException($"{option} {path} is not UTF-8 text");
        }

        if (lines.Length != count)
        {
            throw new UsageException($"{option} {path} has {lines.Length} lines; the {count} {what} tokens need one line each");
        }

        return lines;
    }
}
