namespace AttentionActors.Kernels;

/// <summary>
/// Large fresh arrays asked to be backed by 2 MiB pages where Linux offers them on request
/// (transparent huge pages in <c>madvise</c> mode). An output of 16 MiB is otherwise 4,096 page
/// faults on its first touch, a few percent of a dense job on one thread; as 2 MiB pages it is 8.
/// A hint only: it changes no value, and where it is refused or the GC moves the array later,
/// the pages are simply small.
/// </summary>
internal static class HugePages
{
    public const long HugePage = 2L << 20;

    /// <summary>Below this an array spans too few whole huge pages to matter (one at most).</summary>
    private const long MinimumBytes = 4L << 20;

    /// <summary>A zeroed array of <paramref name="length"/> floats, large ones advised as huge pages before anything touches them.</summary>
    public static float[] Floats(int length)
    {
        var array = new float[length];
        Advise(array);
        return array;
    }

    /// <summary>Floats from element 0 of <paramref name="array"/> to its first 2 MiB boundary.</summary>
    public static unsafe int PadToHugePage(float[] array)
    {
        fixed (float* first = array)
        {
            return (int)((HugePage - ((long)first & (HugePage - 1))) & (HugePage - 1)) / sizeof(float);
        }
    }

    /// <summary>
    /// Advises a large array's whole 2 MiB pages as huge pages: those not touched yet come as huge
    /// pages at their first touch (pages already touched stay as they are).
    /// </summary>
    public static unsafe void Advise(float[] array)
    {
        if ((long)array.Length * sizeof(float) < MinimumBytes)
        {
            return;
        }

        fixed (float* first = array)
        {
            long start = ((long)first + HugePage - 1) & ~(HugePage - 1);
            long end = ((long)(first + array.Length)) & ~(HugePage - 1);
            if (end > start)
            {
                PageAdvice.Give((nint)start, (nuint)(end - start), PageAdvice.HugePage);
            }
        }
    }
}
