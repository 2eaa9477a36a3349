using System.CommandLine;
using System.Globalization;
using AttentionActors.Cli.Logging;
using AttentionActors.Cluster.Node;
using AttentionActors.Cluster.Security;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>
/// <c>attention node</c>: one cluster node in a generic host, until SIGINT or SIGTERM (a graceful
/// leave: running shards answered, exit 0). Exit 1 when it cannot start (certificates, ports, no seed
/// to join), 2 for bad settings, 3 when the cluster took it down (downed by the split-brain resolver
/// after it was unreachable: it cannot rejoin as itself, so it exits for its supervisor to restart it).
/// </summary>
internal static class NodeCommand
{
    public const int DownedExitCode = 3;

    public static Command Create(TextWriter stderr)
    {
        var roles = new Option<string?>("--roles") { Description = "Roles, comma-separated: coordinator, reducer, worker [all three]" };
        var seeds = new Option<string[]?>("--seed") { Description = "Cluster address host:port of a seed node to join (repeat for several) [none: this node is the first seed]", AllowMultipleArgumentsPerToken = true };
        var bind = new Option<string?>("--bind") { Description = "Address both ports listen on [127.0.0.1]; 0.0.0.0 listens on every interface" };
        var advertise = new Option<string?>("--advertise") { Description = "Host name or address others reach this node at [the bind address]" };
        var port = new Option<int?>("--port") { Description = "Cluster port [0: any free port; give the seed a fixed one]" };
        var dataPort = new Option<int?>("--data-port") { Description = "Data port [0: any free port; give the seed a fixed one: clients submit there]" };
        var threads = new Option<int?>("--threads") { Description = "Worker threads [one per core]" };
        var logLevel = new Option<LogLevel>("--log-level") { Description = "Least severe log level shown", DefaultValueFactory = _ => LogLevel.Information };
        var command = new Command("node", "Run a cluster node (coordinator, reducer and/or worker) until SIGINT/SIGTERM, which finish its running shards and leave the cluster (exit 0); exit 3 when the cluster downed it")
        {
            roles, seeds, bind, advertise, port, dataPort, threads, logLevel,
        };
        var flags = ClusterFlags.Add(command, ClusterUse.Node);
        command.SetAction(async (r, cancellationToken) =>
        {
            NodeOptions node;
            try
            {
                var given = flags.Read(r);
                given.Add(new("Node:Roles", r.GetValue(roles)));
                given.Add(new("Node:Seeds", r.GetValue(seeds) is { Length: > 0 } s ? string.Join(',', s) : null));
                given.Add(new("Node:Bind", r.GetValue(bind)));
                given.Add(new("Node:Advertise", r.GetValue(advertise)));
                given.Add(new("Node:Port", r.GetValue(port)?.ToString(CultureInfo.InvariantCulture)));
                given.Add(new("Node:DataPort", r.GetValue(dataPort)?.ToString(CultureInfo.InvariantCulture)));
                given.Add(new("Node:Threads", r.GetValue(threads)?.ToString(CultureInfo.InvariantCulture)));
                node = ClusterSettings.Node(ClusterSettings.Load(flags.ConfigFile(r), given));

                // Certificates are settings too: a missing or wrong one is reported before anything starts.
                _ = ClusterCertificates.Load(node.Certificate!, node.CaCertificate!, node.CertificatePassword);
            }
            catch (Exception ex) when (ex is UsageException or CertificateFileException)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 2;
            }

            return await RunAsync(node, r.GetValue(logLevel), stderr, cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(NodeOptions node, LogLevel level, TextWriter stderr, CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders().SetMinimumLevel(level)
            .AddConsole(c =>
            {
                c.FormatterName = OneLineFormatter.Name;
                c.LogToStandardErrorThreshold = LogLevel.Trace;
            })
            .AddConsoleFormatter<OneLineFormatter, ConsoleFormatterOptions>()
            .AddFilter("Microsoft", LogLevel.Warning)
            .AddFilter("Microsoft.Extensions.Hosting", LogLevel.Critical); // a start failure is reported once, below
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = node.ShutdownTimeout + TimeSpan.FromSeconds(15));
        var outcome = new NodeService.Outcome();
        builder.Services.AddSingleton(outcome);
        builder.Services.AddSingleton(node);
        builder.Services.AddHostedService<NodeService>();
        using var host = builder.Build();
        try
        {
            await host.RunAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is NodeStartException or CertificateFileException)
        {
            stderr.WriteLine($"attention: {ex.Message}");
            return ex is NodeStartException { Downed: true } ? DownedExitCode : 1;
        }

        return outcome.Downed ? DownedExitCode : 0;
    }

    /// <summary>Starts the node with the host, leaves with it, and stops the host (exit 3) if the cluster takes the node down first.</summary>
    private sealed class NodeService(NodeOptions options, ILoggerFactory loggers, IHostApplicationLifetime lifetime, NodeService.Outcome outcome) : IHostedService
    {
        private ClusterNode? node;

        public sealed class Outcome
        {
            public bool Downed { get; set; }
        }

        public async Task StartAsync(CancellationToken cancellationToken)
        {
            node = await ClusterNode.StartAsync(options, loggers, cancellationToken: cancellationToken);
            _ = node.Terminated.ContinueWith(
                asked =>
                {
                    if (!asked.Result)
                    {
                        outcome.Downed = true;
                        loggers.CreateLogger("AttentionActors.Node").LogDowned(node.Address);
                        lifetime.StopApplication();
                    }
                },
                TaskScheduler.Default);
        }

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            if (node is not null)
            {
                if (!outcome.Downed)
                {
                    await node.StopAsync();
                }

                await node.DisposeAsync();
            }
        }
    }
}

internal static partial class NodeLog
{
    [LoggerMessage(Level = LogLevel.Error, Message = "node {Node} was taken down by the cluster (unreachable past the split-brain resolver's stable-after, then downed); a downed node cannot rejoin as itself: exiting with code 3 for its supervisor to restart it")]
    public static partial void LogDowned(this ILogger logger, string node);
}
