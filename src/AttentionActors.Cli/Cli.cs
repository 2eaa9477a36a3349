using System.CommandLine;
using AttentionActors.Cli.Commands;

namespace AttentionActors.Cli;

/// <summary>The <c>attention</c> command line: exit 0 on success, 1 on a failure while computing, 2 on bad arguments or input.</summary>
public static class Cli
{
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        var parsed = Build(stdout, stderr).Parse(args);
        if (parsed.Errors.Count > 0)
        {
            stderr.WriteLine($"attention: {parsed.Errors[0].Message} (see attention --help)");
            return 2;
        }

        return await parsed.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr, ProcessTerminationTimeout = null }, cancellationToken);
    }

    /// <summary>The whole command tree (tests parse the commands of the compose file with it).</summary>
    internal static RootCommand Build(TextWriter stdout, TextWriter stderr) => new("AttentionActors: exact attention over very long sequences, sharded across actors.")
    {
        RunCommand.Create(stdout, stderr),
        InspectCommand.Create(stdout, stderr),
        PlotCommand.Create(stdout, stderr),
        MhaCommand.Create(stdout, stderr),
        BenchCommand.Create(stdout, stderr),
        CompareCommand.Create(stdout, stderr),
        Commands.Cluster.NodeCommand.Create(stderr),
        Commands.Cluster.ClusterCommand.Create(stdout, stderr),
    };
}
