using System.Security.Cryptography;
using System.Text;

namespace AttentionActors.Pipeline.Workers;

/// <summary>
/// Capabilities for results: the coordinator gives each attempt of a shard a grant,
/// HMAC-SHA256(job key, job ‖ shard ‖ attempt) cut to 16 bytes, which only the worker it sends the
/// attempt to learns; the reducer, which holds the job key, merges a result only if its grant is
/// that of its (shard, attempt). So partials are taken only from a worker the coordinator assigned
/// that attempt to, whatever a message claims about its sender.
/// </summary>
public static class Grants
{
    public const int KeyBytes = 32;

    public const int GrantBytes = 16;

    /// <summary>A fresh random job key.</summary>
    public static byte[] NewKey() => RandomNumberGenerator.GetBytes(KeyBytes);

    public static byte[] For(ReadOnlySpan<byte> key, JobId job, int shardId, int attempt)
    {
        Span<byte> mac = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{job.Value}/{shardId}/{attempt}"), mac);
        return mac[..GrantBytes].ToArray();
    }

    /// <summary>Whether <paramref name="grant"/> is the grant of (job, shard, attempt), compared in fixed time.</summary>
    public static bool Valid(ReadOnlySpan<byte> key, JobId job, int shardId, int attempt, ReadOnlySpan<byte> grant)
        => grant.Length == GrantBytes && CryptographicOperations.FixedTimeEquals(For(key, job, shardId, attempt), grant);
}
