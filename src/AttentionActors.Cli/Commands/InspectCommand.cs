using System.CommandLine;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary><c>attention inspect</c>: the inputs and options of <c>run</c>, plus entropy, coverage, weight windows and heatmaps.</summary>
internal static class InspectCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("inspect", "Compute attention, then look inside it: entropy of every query's weights, coverage of every key, weight windows and SVG heatmaps, exactly and without the N×N matrix");
        var readRun = RunCommand.AddOptions(command);
        var entropyOut = new Option<string?>("--entropy-out") { Description = "Write the entropy H_i = −Σ_j a_ij ln a_ij (nats) of every query's weights .npy (float32): Q's leading dims + [Nq]; 0 for a row that sees no key" };
        var coverageOut = new Option<string?>("--coverage-out") { Description = "Write the coverage c_j = Σ_i a_ij of every key .npy (float32): K's leading dims + [Nk], summed over the query heads sharing each key head (a second pass over the keys)" };
        var weightsOut = new Option<string?>("--weights-out") { Description = "Write the weights of the window --rows × --cols of --head (or their mean over heads) .npy (float32) [rows, cols]; at most 64M cells" };
        var rows = new Option<string?>("--rows") { Description = "Query rows a:b of the window (half-open) [all]" };
        var cols = new Option<string?>("--cols") { Description = "Keys c:d of the window (half-open) [all]" };
        var heatmap = new Option<string?>("--heatmap") { Description = "Write an SVG heatmap of the window's weights (opens in a browser)" };
        var head = new Option<int?>("--head") { Description = "Query head of the weights and heatmap [mean over heads]" };
        var batchIndex = new Option<int>("--batch-index") { Description = "Batch element of the weights and heatmap", DefaultValueFactory = _ => 0 };
        var pool = new Option<WeightPooling>("--pool") { Description = "Pooling of weights into heatmap cells: max or mean", DefaultValueFactory = _ => WeightPooling.Max };
        var size = new Option<int>("--size") { Description = "Most heatmap cells a side (2 to 1024)", DefaultValueFactory = _ => 64 };
        var qLabels = new Option<string?>("--q-labels") { Description = "UTF-8 text file, one query token per line (Nq lines): heatmap row labels" };
        var kLabels = new Option<string?>("--k-labels") { Description = "UTF-8 text file, one key token per line (Nk lines): heatmap column labels" };
        foreach (var option in new Option[] { entropyOut, coverageOut, weightsOut, rows, cols, heatmap, head, batchIndex, pool, size, qLabels, kLabels })
        {
            command.Options.Add(option);
        }

        command.SetAction(async (r, cancellationToken) =>
        {
            var request = readRun(r) with
            {
                Inspect = new InspectRequest
                {
                    EntropyOut = r.GetValue(entropyOut),
                    CoverageOut = r.GetValue(coverageOut),
                    WeightsOut = r.GetValue(weightsOut),
                    Rows = r.GetValue(rows),
                    Cols = r.GetValue(cols),
                    Heatmap = r.GetValue(heatmap),
                    Head = r.GetValue(head),
                    BatchIndex = r.GetValue(batchIndex),
                    Pool = r.GetValue(pool),
                    Size = r.GetValue(size),
                    QLabels = r.GetValue(qLabels),
                    KLabels = r.GetValue(kLabels),
                },
            };
            return await RunJob.ExecuteAsync(request, stdout, stderr, cancellationToken);
        });
        return command;
    }
}

/// <summary>Everything <c>attention inspect</c> adds to a run.</summary>
internal sealed record InspectRequest
{
    public string? EntropyOut { get; init; }

    public string? CoverageOut { get; init; }

    public string? WeightsOut { get; init; }

    public string? Rows { get; init; }

    public string? Cols { get; init; }

    public string? Heatmap { get; init; }

    public int? Head { get; init; }

    public int BatchIndex { get; init; }

    public WeightPooling Pool { get; init; } = WeightPooling.Max;

    public int Size { get; init; } = 64;

    public string? QLabels { get; init; }

    public string? KLabels { get; init; }
}
