using System.CommandLine;
using AttentionActors.Cluster;
using AttentionActors.Cluster.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cli.Commands;

/// <summary><c>attention node</c>: one cluster node in a generic host, until SIGINT or SIGTERM.</summary>
internal static class NodeCommand
{
    public static Command Create(TextWriter stderr)
    {
        var roles = new Option<string?>("--roles") { Description = "Roles, comma-separated: coordinator, worker, reducer [all three]" };
        var command = new Command("node", "Run a cluster node (coordinator, worker and/or reducer) until stopped; SIGINT/SIGTERM finish running shards, then exit 0") { roles };
        var common = BrokerFlags.Add(command);
        var config = new Option<string?>("--config") { Description = "JSON settings file (sections Broker, Node, Job; see cluster-config/README.md)" };
        var name = new Option<string?>("--name") { Description = "Unique node name [ROLES-HOST-PID]" };
        var threads = new Option<int?>("--threads") { Description = "Worker threads [one per core]" };
        var logLevel = new Option<LogLevel>("--log-level") { Description = "Least severe log level shown", DefaultValueFactory = _ => LogLevel.Information };
        command.Options.Add(config);
        command.Options.Add(name);
        command.Options.Add(threads);
        command.Options.Add(logLevel);
        command.SetAction(async (r, cancellationToken) =>
        {
            NodeOptions node;
            BrokerOptions broker;
            try
            {
                var flags = common.Read(r);
                flags.Add(new("Node:Roles", r.GetValue(roles)));
                flags.Add(new("Node:Name", r.GetValue(name)));
                flags.Add(new("Node:Threads", r.GetValue(threads)?.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                (node, broker) = NodeConfiguration.Load(r.GetValue(config), flags.Where(f => f.Value is not null));
            }
            catch (UsageException ex)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 2;
            }

            return await RunAsync(node, broker, r.GetValue(logLevel), stderr, cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(NodeOptions node, BrokerOptions broker, LogLevel level, TextWriter stderr, CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.SetMinimumLevel(level).AddSimpleConsole(c =>
        {
            c.SingleLine = true;
            c.TimestampFormat = "HH:mm:ss.fff ";
        });
        // A failure to start is reported once, as one clear line below, not as the host's stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = node.ShutdownTimeout + TimeSpan.FromSeconds(15));
        builder.Services.AddSingleton(new NodeService.Settings(node, broker));
        builder.Services.AddHostedService<NodeService>();
        using var host = builder.Build();
        try
        {
            await host.RunAsync(cancellationToken);
            return 0;
        }
        catch (BrokerUnreachableException ex)
        {
            stderr.WriteLine($"attention: {ex.Message}");
            return 1;
        }
    }

    /// <summary>Starts the node with the host and stops it (draining running shards) when the host stops.</summary>
    private sealed class NodeService(NodeService.Settings settings, ILoggerFactory loggers) : IHostedService
    {
        private ClusterNode? node;

        public sealed record Settings(NodeOptions Node, BrokerOptions Broker);

        public async Task StartAsync(CancellationToken cancellationToken)
            => node = await ClusterNode.StartAsync(settings.Node, settings.Broker, loggers, cancellationToken);

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            if (node is not null)
            {
                await node.StopAsync();
                await node.DisposeAsync();
            }
        }
    }
}

/// <summary>The broker flags every cluster command shares; each maps to a <c>Broker:…</c> setting.</summary>
internal sealed class BrokerFlags
{
    private readonly Option<string?> url = new("--broker") { Description = "Broker URL amqp[s]://[user[:password]@]host[:port][/vhost] (env ATTENTION_BROKER__URL)" };
    private readonly Option<string?> user = new("--broker-user") { Description = "Broker user when the URL names none" };
    private readonly Option<string?> passwordFile = new("--broker-password-file") { Description = "File holding the broker password (first line)" };
    private readonly Option<string?> caFile = new("--ca-file") { Description = "PEM CA certificate that signed the broker's (amqps://)" };
    private readonly Option<double?> connectTimeout = new("--connect-timeout") { Description = "Seconds to keep trying to reach the broker [15]" };

    public static BrokerFlags Add(Command command)
    {
        var flags = new BrokerFlags();
        command.Options.Add(flags.url);
        command.Options.Add(flags.user);
        command.Options.Add(flags.passwordFile);
        command.Options.Add(flags.caFile);
        command.Options.Add(flags.connectTimeout);
        return flags;
    }

    public bool Given(ParseResult r) => r.GetValue(url) is not null;

    /// <summary>The flags given, as configuration keys (absent flags leave the file and environment in force).</summary>
    public List<KeyValuePair<string, string?>> Read(ParseResult r) =>
    [
        new("Broker:Url", r.GetValue(url)),
        new("Broker:UserName", r.GetValue(user)),
        new("Broker:PasswordFile", r.GetValue(passwordFile)),
        new("Broker:CaFile", r.GetValue(caFile)),
        new("Broker:ConnectTimeoutSeconds", r.GetValue(connectTimeout)?.ToString(System.Globalization.CultureInfo.InvariantCulture)),
    ];
}
