using System.Runtime.InteropServices;

namespace AttentionActors.Kernels;

/// <summary>
/// Large fresh arrays asked to be backed by 2 MiB pages where Linux offers them on request
/// (transparent huge pages in <c>madvise</c> mode). An output of 16 MiB is otherwise 4,096 page
/// faults on its first touch, a few percent of a dense job on one thread; as 2 MiB pages it is 8.
/// A hint only: it changes no value, and where it is refused or the GC moves the array later,
/// the pages are simply small.
/// </summary>
internal static partial class HugePages
{
    private const int MadviseHugePage = 14;
    private const long HugePage = 2L << 20;

    /// <summary>Below this an array spans too few huge pages to matter.</summary>
    private const long MinimumBytes = 8L << 20;

    /// <summary>A zeroed array of <paramref name="length"/> floats, large ones advised as huge pages before anything touches them.</summary>
    public static float[] Floats(int length)
    {
        var array = new float[length];
        if (OperatingSystem.IsLinux() && available && (long)length * sizeof(float) >= MinimumBytes)
        {
            try
            {
                Advise(array);
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                // No C library to ask (a libc under another name): small pages from now on.
                available = false;
            }
        }

        return array;
    }

    private static bool available = true;

    private static unsafe void Advise(float[] array)
    {
        fixed (float* first = array)
        {
            long start = ((long)first + HugePage - 1) & ~(HugePage - 1);
            long end = ((long)(first + array.Length)) & ~(HugePage - 1);
            if (end > start)
            {
                // The result is not checked: a kernel without transparent huge pages refuses, and small pages are correct.
                _ = Madvise((nint)start, (nuint)(end - start), MadviseHugePage);
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
