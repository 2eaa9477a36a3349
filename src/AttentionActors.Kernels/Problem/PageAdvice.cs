using System.Runtime.InteropServices;

namespace AttentionActors.Kernels;

/// <summary>
/// Linux's <c>madvise</c>, as a hint: the result is not checked (a kernel that does not know the
/// advice refuses, and the pages behave as before), and where there is no C library to ask it is
/// not asked again. No value ever depends on it.
/// </summary>
internal static partial class PageAdvice
{
    public const int HugePage = 14;
    public const int PopulateRead = 22;
    public const int PopulateWrite = 23;

    private static bool available = OperatingSystem.IsLinux();

    /// <summary>Gives <paramref name="advice"/> for the pages of [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>); <paramref name="start"/> must be page-aligned.</summary>
    public static void Give(nint start, nuint length, int advice)
    {
        if (!available || length == 0)
        {
            return;
        }

        try
        {
            _ = Madvise(start, length, advice);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            // A libc under another name: no advice from now on.
            available = false;
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
