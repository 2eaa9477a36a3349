using System.Collections.Concurrent;

namespace AttentionActors.Pipeline.Client;

/// <summary>
/// Exact-length float arrays for streamed rows, reused within one process: the reducer fills a
/// rented pair and sends it; the job's client, the message's only consumer, copies the rows out and
/// hands the arrays back. Without it every finished row would be garbage once, a whole output's
/// worth per job, which the GC may leave in memory until a full collection. Bounded, so a client
/// in another process (which never returns arrays here) costs nothing but misses.
/// </summary>
internal static class RowBuffers
{
    private const int MaxPerLength = 32;
    private static readonly ConcurrentDictionary<int, ConcurrentBag<float[]>> Free = new();

    public static float[] Rent(int length)
        => Free.TryGetValue(length, out var bag) && bag.TryTake(out var array) ? array : new float[length];

    public static void Return(float[] array)
    {
        var bag = Free.GetOrAdd(array.Length, _ => []);
        if (bag.Count < MaxPerLength)
        {
            bag.Add(array);
        }
    }
}
