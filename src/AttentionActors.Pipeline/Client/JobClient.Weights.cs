using AttentionActors.Kernels;
using AttentionActors.Pipeline.Coordinator;

namespace AttentionActors.Pipeline.Client;

/// <summary>
/// The client's side of a weights pass: cells are checked (place in the window, count, 0 ≤ value ≤ 1,
/// a repeat with the same bits) and written into the output <c>[CellRows, CellCols]</c>; the job
/// completes only when every cell has arrived.
/// </summary>
internal sealed partial class JobClient
{
    private void OnWeights(WeightsFinished cells)
    {
        var window = geometry.Weights;
        string? problem = null;
        if (geometry.Pass != JobPass.Weights || window is null)
        {
            problem = $"job {job} computes {geometry.Pass.ToString().ToLowerInvariant()} but received weight cells";
        }
        else if (cells.CellRowStart < 0 || cells.CellRowCount < 0 || (long)cells.CellRowStart + cells.CellRowCount > window.CellRows
            || cells.CellColStart < 0 || cells.CellColCount < 0 || (long)cells.CellColStart + cells.CellColCount > window.CellCols)
        {
            problem = $"job {job} received cells [{cells.CellRowStart}, {(long)cells.CellRowStart + cells.CellRowCount}) × [{cells.CellColStart}, {(long)cells.CellColStart + cells.CellColCount}), outside the window's {window.CellRows} × {window.CellCols}";
        }
        else if (cells.Values is null || cells.Values.LongLength != (long)cells.CellRowCount * cells.CellColCount)
        {
            problem = $"job {job} received {cells.CellRowCount} × {cells.CellColCount} cells carrying {cells.Values?.Length} values";
        }
        else if (Array.FindIndex(cells.Values, x => !(x >= 0 && x <= Reduction.WeightsCheck.Limit)) is >= 0 and int bad)
        {
            problem = $"job {job} received the weight {cells.Values[bad]} for cell ({cells.CellRowStart + (bad / cells.CellColCount)}, {cells.CellColStart + (bad % cells.CellColCount)})";
        }

        if (problem is not null)
        {
            coordinator.Tell(new CancelJob(job, problem), Self);
            Fail(problem);
            return;
        }

        var span = output.Data.Span;
        for (int r = 0; r < cells.CellRowCount; r++)
        {
            for (int c = 0; c < cells.CellColCount; c++)
            {
                int at = ((cells.CellRowStart + r) * window!.CellCols) + cells.CellColStart + c;
                float value = cells.Values![(r * cells.CellColCount) + c];
                if (received[at])
                {
                    if (BitConverter.SingleToInt32Bits(span[at]) != BitConverter.SingleToInt32Bits(value))
                    {
                        string conflict = $"job {job} received two different weights for cell ({cells.CellRowStart + r}, {cells.CellColStart + c})";
                        coordinator.Tell(new CancelJob(job, conflict), Self);
                        Fail(conflict);
                        return;
                    }

                    continue;
                }

                span[at] = value;
                received[at] = true;
                rowsReceived++;
            }
        }
    }

    /// <summary>Completes a weights pass only if every cell of the window arrived.</summary>
    private void OnWeightsCompleted(AttentionCompleted completed)
    {
        var window = geometry.Weights!;
        if (rowsReceived != window.Cells)
        {
            int first = 0;
            while (first < received.Length && received[first])
            {
                first++;
            }

            Fail($"job {job} finished but {window.Cells - rowsReceived:N0} of the window's {window.Cells:N0} cells never arrived (first: ({first / window.CellCols}, {first % window.CellCols})); {completed.RowsSent:N0} sent");
            return;
        }

        Done();
        result.TrySetResult(new AttentionResult(output, []));
    }
}
