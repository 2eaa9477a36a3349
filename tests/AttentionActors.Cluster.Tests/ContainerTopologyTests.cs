using System.Diagnostics;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// docker-compose.yml for real: containers/run-topology.sh brings the topology up under podman with
/// containers/run-podman.sh (the script users run), and requires a client container's output, a job
/// submitted from the host through the published port, and a job during which a worker container is
/// killed to equal embedded mode bit for bit.
/// </summary>
public sealed class ContainerTopologyTests
{
    [Fact]
    public async Task The_compose_topology_runs_under_podman_and_gives_embedded_bits_from_inside_from_the_host_and_with_a_worker_killed()
    {
        var start = new ProcessStartInfo("bash", [Path.Combine(NodeProcess.Root, "containers", "run-topology.sh")]) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["ATTENTION_CLI"] = NodeProcess.CliPath;
        using var run = Process.Start(start)!;
        var stdout = run.StandardOutput.ReadToEndAsync();
        var stderr = run.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(15));
        try
        {
            await run.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            // The script's own trap takes the containers down when it is interrupted.
            Process.Start("kill", ["-INT", run.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            await run.WaitForExitAsync();
            Assert.Fail($"run-topology.sh did not finish in 15 minutes:\n{await stdout + await stderr}");
        }
        string output = await stdout + await stderr;

        Assert.True(run.ExitCode == 0, $"run-topology.sh exited {run.ExitCode}:\n{output}");
        Assert.Contains("topology: client job: cluster == embedded bit for bit", output, StringComparison.Ordinal);
        Assert.Contains("topology: job from the host: cluster == embedded bit for bit", output, StringComparison.Ordinal);
        Assert.Contains("topology: job with a killed worker: cluster == embedded bit for bit", output, StringComparison.Ordinal);
        Assert.Contains("topology: passed", output, StringComparison.Ordinal);
    }
}
