using System.Globalization;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>--verify</c>: recomputes single-node (must match bit for bit) and the float64 reference
/// (must be within |out − ref| ≤ 2e-6 + 1e-5·|ref|). The reference covers every row when that costs
/// at most 4 GFLOP, else 256 rows spread over batches, heads and positions.
/// </summary>
internal static class Verifier
{
    private const double FullReferenceFlops = 4e9;
    private const int SampledRows = 256;

    public static int Check(AttentionProblem p, AttentionResult sharded, TextWriter stdout)
    {
        var single = Attention.Compute(p);
        int differing = 0;
        var a = single.Output.Data.Span;
        var b = sharded.Output.Data.Span;
        for (int i = 0; i < a.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]) ? 1 : 0;
        }

        for (int i = 0; i < single.Lse.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(single.Lse[i]) != BitConverter.SingleToInt32Bits(sharded.Lse[i]) ? 1 : 0;
        }

        var check = ReferenceCheck.Compare(p, sharded, ReferenceCheck.Rows(p, SampledRows, FullReferenceFlops));
        string scope = check.AllRows ? $"all {check.Rows} rows" : $"{check.Rows} sampled rows";
        stdout.WriteLine($"verify: sharded == single-node bit for bit: {(differing == 0 ? "yes" : $"NO ({differing} values differ)")}");
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"verify: float64 reference on {scope}: max |out − ref| = {check.MaxAbs:G3}, max relative = {check.MaxRel:G3}; {(check.Inside ? "within" : "OUTSIDE")} the contract |out − ref| ≤ 2e-6 + 1e-5·|ref|"));
        return differing == 0 && check.Inside ? 0 : 1;
    }
}
