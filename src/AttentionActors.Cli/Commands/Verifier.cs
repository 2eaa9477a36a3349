using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>--verify</c>: computes the job the other way — single-node when it ran sharded, on the
/// embedded pipeline when it ran single-node — and requires identical bits, then compares with the
/// float64 reference (|out − ref| ≤ 2e-6 + 1e-5·|ref|). The reference covers every row when that
/// costs at most 4 GFLOP, else 256 rows spread over batches, heads and positions. Every line it
/// prints names the two computations it actually compared.
/// </summary>
internal static class Verifier
{
    private const double FullReferenceFlops = 4e9;
    private const int SampledRows = 256;

    public static async Task<int> CheckAsync(AttentionProblem p, AttentionResult result, bool resultIsSingleNode, ClusterOptions cluster, TextWriter stdout, CancellationToken cancellationToken, string resultName = "sharded")
    {
        AttentionResult other;
        string comparison;
        if (resultIsSingleNode)
        {
            await using var embedded = AttentionCluster.StartEmbedded(cluster with { LoggerFactory = null });
            other = await embedded.ComputeAsync(p, null, cancellationToken);
            comparison = $"single-node == sharded ({cluster.Workers} {(cluster.Workers == 1 ? "worker" : "workers")})";
        }
        else
        {
            other = Attention.Compute(p, null, null, cancellationToken);
            comparison = $"{resultName} == single-node";
        }

        int differing = Differing(result.Output.Data.Span, other.Output.Data.Span) + Differing(result.Lse, other.Lse);
        var check = ReferenceCheck.Compare(p, result, ReferenceCheck.Rows(p, SampledRows, FullReferenceFlops));
        string scope = check.AllRows ? $"all {check.Rows} rows" : $"{check.Rows} sampled rows";
        stdout.WriteLine($"verify: {comparison} bit for bit: {(differing == 0 ? "yes" : $"NO ({differing} values differ)")}");
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"verify: float64 reference on {scope}: max |out − ref| = {check.MaxAbs:G3}, max relative = {check.MaxRel:G3}; {(check.Inside ? "within" : "OUTSIDE")} the contract |out − ref| ≤ 2e-6 + 1e-5·|ref|"));
        return differing == 0 && check.Inside ? 0 : 1;
    }

    private static int Differing(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int differing = 0;
        for (int i = 0; i < a.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]) ? 1 : 0;
        }

        return differing;
    }
}
