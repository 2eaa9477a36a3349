using AttentionActors.Kernels;

namespace AttentionActors.Pipeline;

/// <summary>
/// How a runner submits an attention job: a decoding step with grouped K/V heads as its stacked
/// form (<see cref="KeyGroupStacking"/>), whose shards each hold every query head of a K/V group
/// and read the group's keys and values once, and any other job as it is. The bits are the same.
/// </summary>
internal static class StackedJobs
{
    /// <summary>
    /// Runs <paramref name="problem"/> through <paramref name="run"/> (a problem and the output to
    /// write into), stacked when it stacks. A failed stacked job's message says how its shards'
    /// heads and rows map to the problem's query heads.
    /// </summary>
    public static async Task<AttentionResult> RunAsync(AttentionProblem problem, AttentionTensor? output, Func<AttentionProblem, AttentionTensor?, Task<AttentionResult>> run)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(run);
        if (KeyGroupStacking.TryStack(problem, output) is not { } stacked)
        {
            return await run(problem, output).ConfigureAwait(false);
        }

        try
        {
            return KeyGroupStacking.Unstack(problem, await run(stacked.Problem, stacked.Output).ConfigureAwait(false), output);
        }
        catch (AttentionJobException ex)
        {
            throw new AttentionJobException($"{ex.Message} ({KeyGroupStacking.Describe(problem.Geometry)})", ex) { NodeLost = ex.NodeLost };
        }
    }
}
