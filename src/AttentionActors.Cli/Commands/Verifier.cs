using System.Globalization;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>--verify</c>: computes the job the other way — single-node when it ran sharded (embedded or
/// on a cluster), on the embedded pipeline when it ran single-node — and requires identical bits, then compares with the
/// float64 reference (|out − ref| ≤ 2e-6 + 1e-5·|ref|). The reference covers every row when that
/// costs at most 4 GFLOP, else 256 rows spread over batches, heads and positions. Every line it
/// prints names the two computations it actually compared.
/// </summary>
internal static class Verifier
{
    private const double FullReferenceFlops = 4e9;
    private const int SampledRows = 256;

    /// <summary>Computes <paramref name="p"/> again on <paramref name="other"/> and compares bit for bit, then against the reference; 0 when both hold.</summary>
    public static async Task<int> CheckAsync(AttentionProblem p, AttentionResult result, string resultWhere, IAttentionRunner other, TextWriter stdout, CancellationToken cancellationToken)
    {
        var again = await other.ComputeAsync(p, null, null, cancellationToken);
        int differing = Differing(result.Output.Data.Span, again.Output.Data.Span) + Differing(result.Lse, again.Lse);
        var check = ReferenceCheck.Compare(p, result, ReferenceCheck.Rows(p, SampledRows, FullReferenceFlops));
        string scope = check.AllRows ? $"all {check.Rows} rows" : $"{check.Rows} sampled rows";
        stdout.WriteLine($"verify: {resultWhere} and {other.Where} agree bit for bit: {(differing == 0 ? "yes" : $"NO ({differing} values differ)")}");
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
