using System.Collections;
using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Client;

namespace AttentionActors.Pipeline.Reduction;

/// <summary>
/// The reducer's side of a weights pass: every shard computes whole cells, so nothing is merged.
/// The plan must own every cell of the window exactly once; each shard's cells are checked
/// (<see cref="WeightsCheck"/>) and streamed to the client in row bands of at most one message.
/// Duplicates and audits are handled as for partials.
/// </summary>
internal sealed partial class Reducer
{
    private readonly Dictionary<JobId, WeightsState> weightsJobs = [];

    private void ExpectWeights(ExpectShards expect, IActorRef client)
    {
        if (WeightsPlanProblem(expect) is { } problem)
        {
            Refuse(expect, client, problem);
            return;
        }

        var job = weightsJobs[expect.Job] = new WeightsState(expect, client);
        client.Tell(job.Progress(), Self);
    }

    /// <summary>Why a weights plan cannot be reduced, or null: its shards must own every cell of the window exactly once.</summary>
    private static string? WeightsPlanProblem(ExpectShards expect)
    {
        var g = expect.Geometry;
        var window = g.Weights;
        if (window is null || window.Invalid(g) is not null)
        {
            return $"the weights pass has no valid window ({window?.Invalid(g) ?? "none"})";
        }

        var owned = new BitArray(checked((int)window.Cells));
        long count = 0;
        try
        {
            foreach (var shard in expect.Shards)
            {
                if (shard.Batch != window.Batch || shard.Head != window.FirstHead)
                {
                    return $"the weights plan's {shard} is not of batch {window.Batch}, head {window.FirstHead}";
                }

                var cells = window.CellsOf(g, shard.RowStart, shard.RowCount, shard.BlockStart, shard.BlockEnd);
                for (int r = cells.CellRowStart; r < cells.CellRowEnd; r++)
                {
                    for (int c = cells.CellColStart; c < cells.CellColEnd; c++)
                    {
                        int at = (r * window.CellCols) + c;
                        if (owned[at])
                        {
                            return $"the weights plan computes cell ({r}, {c}) twice (again in {shard})";
                        }

                        owned[at] = true;
                        count++;
                    }
                }
            }
        }
        catch (AttentionInputException ex)
        {
            return $"the weights plan cannot be reduced: {ex.Message}";
        }

        return count == window.Cells ? null : $"the weights plan leaves {window.Cells - count:N0} of the window's {window.Cells:N0} cells to no shard";
    }

    private void OnWeights(WeightsComputed done) => Admit(
        weightsJobs,
        done.Job,
        done.ShardId,
        done.Attempt,
        done.Grant,
        (job, shard) => WeightsCheck.Invalid(job.Expect.Geometry, shard, done.Cells),
        () => PartialDigest.Of(done.Cells),
        (job, _) => SendCells(job, done.Cells),
        CompleteWeights);

    /// <summary>Streams a shard's cells to the client in bands of whole cell rows, one message each.</summary>
    private void SendCells(WeightsState job, WeightsCells cells)
    {
        var range = cells.Range;
        int width = range.CellColEnd - range.CellColStart;
        int rowsPerMessage = Math.Max(1, Math.Min(maxMessageBytes, RowsMessageBytes) / 4 / width);
        for (int r = range.CellRowStart; r < range.CellRowEnd; r += rowsPerMessage)
        {
            int n = Math.Min(rowsPerMessage, range.CellRowEnd - r);
            var values = cells.Values.AsSpan((r - range.CellRowStart) * width, n * width).ToArray();
            job.Client.Tell(new WeightsFinished(job.Expect.Job, r, n, range.CellColStart, width, values), Self);
            job.CellsSent += values.Length;
        }
    }

    private void CompleteWeights(WeightsState job)
    {
        weightsJobs.Remove(job.Expect.Job);
        job.Client.Tell(new AttentionCompleted(job.Expect.Job, job.CellsSent), Self);
        job.Release(Self);
    }

    private sealed class WeightsState(ExpectShards expect, IActorRef client) : JobBook(expect, client)
    {
        public long CellsSent { get; set; }
    }
}
