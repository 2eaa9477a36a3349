namespace AttentionActors.Cluster.Tests;

/// <summary>The test classes that share one <see cref="MixedCluster"/> (they run one after another).</summary>
[CollectionDefinition(Name)]
public sealed class MixedClusterCollection : ICollectionFixture<MixedCluster>
{
    public const string Name = "mixed cluster";
}

/// <summary>
/// One cluster shared by the tests that leave it running: a seed (coordinator and reducer) and three
/// workers of different vector widths — AVX-512, 256-bit vectors, and as on a CPU without AVX-512.
/// </summary>
public sealed class MixedCluster : IAsyncLifetime
{
    public static readonly string[] Workers = ["worker-512", "worker-256", "worker-noavx512"];

    public ClusterHarness Harness { get; } = new();

    public async Task InitializeAsync()
    {
        Harness.StartSeed();
        Harness.Start(Workers[0], "worker");
        Harness.Start(Workers[1], "worker", environment: new Dictionary<string, string> { ["DOTNET_PreferredVectorBitWidth"] = "256" });
        Harness.Start(Workers[2], "worker", environment: new Dictionary<string, string> { ["DOTNET_EnableAVX512"] = "0" });
        await Harness.WaitForMembers(4);
    }

    public async Task DisposeAsync() => await Harness.DisposeAsync();
}
