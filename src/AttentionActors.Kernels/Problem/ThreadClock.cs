using System.Runtime.InteropServices;

namespace AttentionActors.Kernels;

/// <summary>
/// The CPU time the calling thread has run (Linux's <c>CLOCK_THREAD_CPUTIME_ID</c>, to the
/// nanosecond): unlike a wall clock it does not advance while the thread waits for a core, so a
/// speed measured with it is the thread's own while other threads share the cores. Null where the
/// clock is not offered.
/// </summary>
internal static partial class ThreadClock
{
    private const int ThreadCpuTime = 3;

    private static bool available = OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    /// <summary>The calling thread's CPU time so far, or null.</summary>
    public static TimeSpan? Now()
    {
        if (!available)
        {
            return null;
        }

        try
        {
            Span<long> spec = stackalloc long[2];
            if (ClockGetTime(ThreadCpuTime, spec) != 0)
            {
                available = false;
                return null;
            }

            // struct timespec on 64-bit Linux: seconds, then nanoseconds.
            return TimeSpan.FromTicks((spec[0] * TimeSpan.TicksPerSecond) + (spec[1] / 100));
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            available = false;
            return null;
        }
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, Span<long> spec);
}
