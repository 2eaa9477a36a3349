using System.Diagnostics;
using Xunit.Abstractions;

namespace AttentionActors.Cluster.Tests;

/// <summary>The data plane at full speed beside the cluster's heartbeats, which ride their own connections.</summary>
[Collection(MixedClusterCollection.Name)]
public sealed class DataPlaneLoadTests(MixedCluster cluster, ITestOutputHelper output)
{
    private const string Unreachable = "Marking node(s) as UNREACHABLE";

    private int UnreachableLines() => cluster.Harness.Nodes.Sum(n => n.Output.Split('\n').Count(l => l.Contains(Unreachable, StringComparison.Ordinal)));

    [Fact]
    public async Task Sixty_seconds_of_full_speed_transfers_leave_every_member_reachable()
    {
        var op = cluster.Harness.Operator;
        var members = (await op.StatusAsync()).Members;
        Assert.All(members, m => Assert.True(m.Reachable && m.Card is not null, $"{m.Address} before the load: {m.Status}, reachable {m.Reachable}"));
        int before = UnreachableLines();

        // 8 MiB answers from the seed and from a worker, back to back, two streams each: both cores busy sealing and opening records.
        const int Payload = 8 << 20;
        var endpoints = members.Take(2).Select(m => m.Card!.DataEndpoint).ToList();
        long bytes = 0;
        var clock = Stopwatch.StartNew();
        var stop = TimeSpan.FromSeconds(60);
        var streams = endpoints.SelectMany(e => new[] { e, e }).Select(endpoint => Task.Run(async () =>
        {
            while (clock.Elapsed < stop)
            {
                Assert.Equal(Payload, await op.ProbeAsync(endpoint, Payload));
                Interlocked.Add(ref bytes, Payload);
            }
        }));
        await Task.WhenAll(streams);
        double seconds = clock.Elapsed.TotalSeconds;

        output.WriteLine($"{bytes >> 20} MiB in {seconds:F1} s: {bytes / seconds / (1 << 30):F2} GiB/s over four streams");
        int after = UnreachableLines();
        var status = await op.StatusAsync();
        Assert.True(after == before, $"{after - before} unreachability events during {bytes / seconds / (1 << 30):F2} GiB/s of transfers:\n{cluster.Harness.Logs()}");
        Assert.All(status.Members, m => Assert.True(m.Reachable && m.Status == "Up", $"{m.Address} after the load: {m.Status}, reachable {m.Reachable}"));
        Assert.True(bytes >= 60L * Payload, $"only {bytes >> 20} MiB moved in {seconds:F0} s");
    }
}
