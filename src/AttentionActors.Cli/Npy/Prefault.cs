using AttentionActors.Kernels;

namespace AttentionActors.Cli.Npy;

/// <summary>
/// Maps a file mapping's pages in one call (Linux's MADV_POPULATE_READ / MADV_POPULATE_WRITE)
/// instead of one page fault per 4 KiB page on first touch: a 16 MiB output written through its
/// mapping was 4,096 faults, and on a virtual machine each costs several microseconds. Only for
/// mappings that fit comfortably in memory: one larger than that is touched a part at a time and
/// may be written back meanwhile. A hint only: where the kernel refuses (before Linux 5.14), the
/// pages fault in as before, and no value changes.
/// </summary>
internal static class Prefault
{
    /// <summary>Mappings up to this size are populated whole.</summary>
    public const long MaxBytes = 1L << 30;

    public static unsafe void Pages(byte* start, long length, bool write)
    {
        if (length <= 0 || length > MaxBytes)
        {
            return;
        }

        long first = (long)start & ~4095L;
        PageAdvice.Give((nint)first, (nuint)((long)start + length - first), write ? PageAdvice.PopulateWrite : PageAdvice.PopulateRead);
    }
}
