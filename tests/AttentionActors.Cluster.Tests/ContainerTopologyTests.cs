using System.Diagnostics;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// docker-compose.yml for real: containers/run-topology.sh builds the local images (cached between
/// runs on a machine), starts the broker, coordinator, reducer and 3 workers under podman, and
/// requires the client's output — with and without a worker killed mid-job — to equal embedded mode bit for bit.
/// </summary>
[Collection(BrokerCollection.Name)]
public sealed class ContainerTopologyTests
{
    [Fact]
    public async Task The_compose_topology_runs_under_podman_and_gives_embedded_bits_even_with_a_worker_killed()
    {
        // The built command line lives at ROOT/src/AttentionActors.Cli/bin/CONFIGURATION/net10.0/attention.dll.
        string root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(NodeProcess.CliPath)!, "..", "..", "..", "..", ".."));
        string script = Path.Combine(root, "containers", "run-topology.sh");
        var start = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var run = Process.Start(start)!;
        var stdout = run.StandardOutput.ReadToEndAsync();
        var stderr = run.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        await run.WaitForExitAsync(timeout.Token);
        string output = await stdout + await stderr;

        Assert.True(run.ExitCode == 0, $"run-topology.sh exited {run.ExitCode}:\n{output}");
        Assert.Contains("topology: client job: cluster == embedded bit for bit", output, StringComparison.Ordinal);
        Assert.Contains("topology: job with a killed worker: cluster == embedded bit for bit", output, StringComparison.Ordinal);
        Assert.Contains("topology: passed", output, StringComparison.Ordinal);
    }
}
