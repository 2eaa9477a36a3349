using System.Runtime.Intrinsics;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Simd;
using AttentionActors.Kernels.Tiles;

namespace AttentionActors.Kernels.Tests;

/// <summary>
/// The panel's row-vectorized merge of two stack slots gives <see cref="PartialMath.MergeInto"/>'s
/// bits row by row, at every width: ties, identities on either side or both, and never reads an
/// identity's o (filled with NaN here).
/// </summary>
public class MergeSlotsTests
{
    public static TheoryData<int, int> Shapes => new() { { 37, 65 }, { 128, 64 }, { 5, 13 }, { 48, 1 } };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Merged_slots_match_the_scalar_merge_bit_for_bit(int rows, int valueDim)
    {
        Check<Lanes512, Vector512<float>>(rows, valueDim);
        Check<Lanes256, Vector256<float>>(rows, valueDim);
        Check<Lanes128, Vector128<float>>(rows, valueDim);
        Check<LanesScalar, float>(rows, valueDim);
    }

    private static void Check<TL, TV>(int rows, int valueDim)
        where TL : ILanes<TV>
        where TV : unmanaged
    {
        var rng = new Random((rows * 31) + valueDim);
        var ws = Workspace.For(16, 16, rows, valueDim, 3);
        var m = new float[2, rows];
        var l = new float[2, rows];
        var o = new float[2, rows, valueDim];
        for (int r = 0; r < rows; r++)
        {
            // Row kinds: 0 both finite, 1 right identity, 2 left identity, 3 both identities, 4 a tie.
            int kind = r % 5;
            for (int side = 0; side < 2; side++)
            {
                bool identity = (kind == 1 && side == 1) || (kind == 2 && side == 0) || kind == 3;
                m[side, r] = identity ? float.NegativeInfinity : (kind == 4 ? 1.25f : (float)((rng.NextDouble() * 40) - 20));
                l[side, r] = identity ? 0f : (float)(1 + (rng.NextDouble() * 100));
                for (int c = 0; c < valueDim; c++)
                {
                    o[side, r, c] = identity ? float.NaN : (float)((rng.NextDouble() * 8) - 4);
                }
            }
        }

        // Slots 1 and 2 (slot 0 holds garbage that must stay untouched).
        for (int side = 0; side < 2; side++)
        {
            for (int r = 0; r < rows; r++)
            {
                int at = ws.Index(side + 1, r);
                ws.StackM[at] = m[side, r];
                ws.StackL[at] = l[side, r];
                for (int c = 0; c < valueDim; c++)
                {
                    ws.StackO[(at * valueDim) + c] = o[side, r, c];
                }
            }
        }

        PanelKernel<TL, TV>.MergeSlots(ws, 1, 2, rows);

        for (int r = 0; r < rows; r++)
        {
            float em = m[0, r], el = l[0, r];
            var eo = new float[valueDim];
            var o2 = new float[valueDim];
            for (int c = 0; c < valueDim; c++)
            {
                eo[c] = o[0, r, c];
                o2[c] = o[1, r, c];
            }

            PartialMath.MergeInto(ref em, ref el, eo, m[1, r], l[1, r], o2);
            int at = ws.Index(1, r);
            string where = $"{typeof(TL).Name}, {rows} rows × {valueDim}, row {r} (kind {r % 5})";
            Assert.True(BitConverter.SingleToInt32Bits(em) == BitConverter.SingleToInt32Bits(ws.StackM[at]), $"{where}: m {ws.StackM[at]:R}, expected {em:R}");
            Assert.True(BitConverter.SingleToInt32Bits(el) == BitConverter.SingleToInt32Bits(ws.StackL[at]), $"{where}: l {ws.StackL[at]:R}, expected {el:R}");
            if (float.IsNegativeInfinity(em))
            {
                continue; // an identity's o is never read
            }

            for (int c = 0; c < valueDim; c++)
            {
                float got = ws.StackO[(at * valueDim) + c];
                Assert.True(BitConverter.SingleToInt32Bits(eo[c]) == BitConverter.SingleToInt32Bits(got), $"{where}, column {c}: o {got:R}, expected {eo[c]:R}");
            }
        }
    }
}
