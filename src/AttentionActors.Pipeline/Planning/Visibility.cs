using AttentionActors.Kernels;

namespace AttentionActors.Pipeline.Planning;

/// <summary>
/// Which keys the rows of a job see, answered for the planner in O(log N) per question instead of a
/// pass over the rows: a 1M-token plan asks hundreds of thousands of them. The causal, window and
/// padding masks give each row i an interval [lo_i, hi_i) whose ends never decrease with i (up to a
/// sequence's own length) and whose non-empty rows are contiguous; with prefix sums of both ends, the
/// visible pairs of any rows × key range are a few binary searches. Each batch entry's arrays are built
/// once, from <see cref="AttentionGeometry.VisibleKeys"/> itself, and checked to have that shape; an
/// entry that does not falls back to the geometry's own row-by-row answers.
/// </summary>
internal sealed class Visibility(AttentionGeometry geometry)
{
    private readonly Rows?[] rows = new Rows?[geometry.Batch];
    private readonly bool[] built = new bool[geometry.Batch];

    public AttentionGeometry Geometry { get; } = geometry;

    /// <summary>The blocks [first, end) that any of the rows [rowStart, rowStart + rowCount) sees; (0, 0) when none.</summary>
    public (int First, int End) Blocks(int b, int rowStart, int rowCount)
    {
        if (For(b) is not { } r)
        {
            return Geometry.VisibleBlocks(b, rowStart, rowCount);
        }

        int first = Math.Max(rowStart, r.SeenStart), end = Math.Min(rowStart + rowCount, r.SeenEnd);
        if (first >= end)
        {
            return (0, 0);
        }

        int block = Geometry.BlockSize;
        return (r.Lo[first] / block, (int)(((long)r.Hi[end - 1] + block - 1) / block));
    }

    /// <summary>Visible (query, key) pairs of rows [rowStart, rowStart + rowCount) of batch b within blocks [blockStart, blockEnd).</summary>
    public long Pairs(int b, int rowStart, int rowCount, int blockStart, int blockEnd)
    {
        if (For(b) is not { } r)
        {
            return Geometry.VisiblePairs(b, rowStart, rowCount, blockStart, blockEnd);
        }

        long keyStart = (long)blockStart * Geometry.BlockSize;
        long keyEnd = Math.Min((long)blockEnd * Geometry.BlockSize, Geometry.KeySeq);
        return r.Pairs(rowStart, rowStart + rowCount, keyStart, keyEnd);
    }

    /// <summary>The first row r in (rowStart, rowStart + rowCount] such that rows [rowStart, r) see at least <paramref name="target"/> pairs within the blocks; rowStart + rowCount when none does.</summary>
    public int RowReaching(int b, int rowStart, int rowCount, int blockStart, int blockEnd, long target)
    {
        if (For(b) is null)
        {
            long keyStart = (long)blockStart * Geometry.BlockSize;
            long keyEnd = Math.Min((long)blockEnd * Geometry.BlockSize, Geometry.KeySeq);
            long acc = 0;
            for (int i = rowStart; i < rowStart + rowCount; i++)
            {
                var (lo, hi) = Geometry.VisibleKeys(b, i);
                acc += Math.Max(0, Math.Min(hi, keyEnd) - Math.Max(lo, keyStart));
                if (acc >= target)
                {
                    return i + 1;
                }
            }

            return rowStart + rowCount;
        }

        // Pairs of rows [rowStart, r) never decrease with r: the first r that reaches the target, by bisection.
        int low = rowStart + 1, high = rowStart + rowCount;
        while (low < high)
        {
            int mid = low + ((high - low) / 2);
            if (Pairs(b, rowStart, mid - rowStart, blockStart, blockEnd) >= target)
            {
                high = mid;
            }
            else
            {
                low = mid + 1;
            }
        }

        return low;
    }

    /// <summary>Whether <see cref="Pairs"/> answers batch b without a pass over its rows.</summary>
    public bool Indexed(int b) => For(b) is not null;

    private Rows? For(int b)
    {
        if (!built[b])
        {
            rows[b] = Rows.Build(Geometry, b);
            built[b] = true;
        }

        return rows[b];
    }

    /// <summary>One batch entry's intervals: ends and their prefix sums over the rows that may see keys.</summary>
    private sealed class Rows
    {
        private Rows(int[] lo, int[] hi, int seenStart, int seenEnd)
        {
            Lo = lo;
            Hi = hi;
            SeenStart = seenStart;
            SeenEnd = seenEnd;
            SumLo = new long[lo.Length + 1];
            SumHi = new long[hi.Length + 1];
            for (int i = 0; i < lo.Length; i++)
            {
                SumLo[i + 1] = SumLo[i] + lo[i];
                SumHi[i + 1] = SumHi[i] + hi[i];
            }
        }

        public int[] Lo { get; }

        public int[] Hi { get; }

        public long[] SumLo { get; }

        public long[] SumHi { get; }

        /// <summary>Rows [SeenStart, SeenEnd) see at least one key; no other row does.</summary>
        public int SeenStart { get; }

        public int SeenEnd { get; }

        /// <summary>The intervals of batch b, or null when their ends decrease somewhere or the rows that see keys are not contiguous.</summary>
        public static Rows? Build(AttentionGeometry g, int b)
        {
            int n = g.QuerySeq;
            var lo = new int[n];
            var hi = new int[n];
            int seenStart = -1, seenEnd = -1;
            for (int i = 0; i < n; i++)
            {
                (lo[i], hi[i]) = g.VisibleKeys(b, i);
                if (hi[i] > lo[i])
                {
                    if (seenEnd >= 0 && seenEnd != i)
                    {
                        return null;
                    }

                    seenStart = seenStart < 0 ? i : seenStart;
                    seenEnd = i + 1;
                }
            }

            if (seenStart < 0)
            {
                return new Rows(lo, hi, 0, 0);
            }

            for (int i = seenStart + 1; i < seenEnd; i++)
            {
                if (lo[i] < lo[i - 1] || hi[i] < hi[i - 1])
                {
                    return null;
                }
            }

            return new Rows(lo, hi, seenStart, seenEnd);
        }

        /// <summary>
        /// Σ over rows [r0, r1) of max(0, min(hi, keyEnd) − max(lo, keyStart)). Among the rows that see
        /// keys, those with hi > keyStart are a suffix and those with lo &lt; keyEnd a prefix, so the rows
        /// that count are one run [a, z), where every term is positive and splits at the rows where hi
        /// reaches keyEnd and lo reaches keyStart.
        /// </summary>
        public long Pairs(int r0, int r1, long keyStart, long keyEnd)
        {
            r0 = Math.Max(r0, SeenStart);
            r1 = Math.Min(r1, SeenEnd);
            if (r0 >= r1 || keyStart >= keyEnd)
            {
                return 0;
            }

            int a = FirstAbove(Hi, keyStart, r0, r1);
            int z = FirstAbove(Lo, keyEnd - 1, a, r1);
            if (a >= z)
            {
                return 0;
            }

            int hiCapped = FirstAbove(Hi, keyEnd - 1, a, z);
            int loRaised = FirstAbove(Lo, keyStart - 1, a, z);
            long sumHi = SumHi[hiCapped] - SumHi[a] + (keyEnd * (z - hiCapped));
            long sumLo = (keyStart * (loRaised - a)) + SumLo[z] - SumLo[loRaised];
            return sumHi - sumLo;
        }

        /// <summary>The first i in [from, to) with values[i] > bound (values non-decreasing there); to when none.</summary>
        private static int FirstAbove(int[] values, long bound, int from, int to)
        {
            while (from < to)
            {
                int mid = from + ((to - from) / 2);
                if (values[mid] > bound)
                {
                    to = mid;
                }
                else
                {
                    from = mid + 1;
                }
            }

            return from;
        }
    }
}
