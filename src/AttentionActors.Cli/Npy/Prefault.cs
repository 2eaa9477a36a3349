using System.Runtime.InteropServices;

namespace AttentionActors.Cli.Npy;

/// <summary>
/// Maps a file mapping's pages in one call (Linux's MADV_POPULATE_READ / MADV_POPULATE_WRITE)
/// instead of one page fault per 4 KiB page on first touch: a 16 MiB output written through its
/// mapping was 4,096 faults, and on a virtual machine each costs several microseconds. Only for
/// mappings that fit comfortably in memory: one larger than that is touched a part at a time and
/// may be written back meanwhile. A hint only: where the kernel refuses (before Linux 5.14), the
/// pages fault in as before, and no value changes.
/// </summary>
internal static partial class Prefault
{
    private const int PopulateRead = 22;
    private const int PopulateWrite = 23;

    /// <summary>Mappings up to this size are populated whole.</summary>
    public const long MaxBytes = 1L << 30;

    private static bool available = OperatingSystem.IsLinux();

    public static unsafe void Pages(byte* start, long length, bool write)
    {
        if (!available || length <= 0 || length > MaxBytes)
        {
            return;
        }

        long first = (long)start & ~4095L;
        try
        {
            // The result is not checked: a kernel without the advice refuses, and faulting page by page is correct.
            _ = Madvise((nint)first, (nuint)((long)start + length - first), write ? PopulateWrite : PopulateRead);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            available = false;
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
