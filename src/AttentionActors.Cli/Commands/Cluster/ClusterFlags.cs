using System.CommandLine;
using System.Globalization;
using AttentionActors.Cluster.Client;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>The flags every command that talks to a cluster shares, each mapped to a setting (<see cref="ClusterSettings"/>).</summary>
internal sealed class ClusterFlags
{
    private readonly Option<string?> cluster = new("--cluster") { Description = "Run on a cluster: a node's data endpoint host:port (cluster up prints it)" };
    private readonly Option<string?> listen = new("--listen") { Description = "With --cluster: address:port this client's data port listens on (workers fetch the tensors there) [127.0.0.1:0]" };
    private readonly Option<string?> advertise = new("--advertise") { Description = "With --cluster: host name or address the cluster's nodes reach this client at [the listen address]" };
    private readonly Option<string?> certificate = new("--cert") { Description = $"This process's certificate, PKCS#12 with its key [{Path.Combine(ClusterSettings.HomeDirectory, "node.pfx or client.pfx")}]" };
    private readonly Option<string?> ca = new("--ca") { Description = $"The cluster CA's certificate, PEM [{Path.Combine(ClusterSettings.HomeDirectory, "ca.pem")}]" };
    private readonly Option<string?> config = new("--config") { Description = "JSON settings file (sections Node, Tls, Job, Client; see cluster-config/README.md)" };
    private ClusterUse use;

    /// <summary>Adds the flags <paramref name="use"/> needs to <paramref name="command"/>: the certificates always; <c>--cluster</c> for clients and operators; <c>--listen</c> and <c>--advertise</c> for clients.</summary>
    public static ClusterFlags Add(Command command, ClusterUse use)
    {
        var flags = new ClusterFlags { use = use };
        if (use != ClusterUse.Node)
        {
            command.Options.Add(flags.cluster);
        }

        if (use == ClusterUse.Client)
        {
            command.Options.Add(flags.listen);
            command.Options.Add(flags.advertise);
        }

        command.Options.Add(flags.certificate);
        command.Options.Add(flags.ca);
        command.Options.Add(flags.config);
        return flags;
    }

    public string? ConfigFile(ParseResult r) => r.GetValue(config);

    /// <summary>The certificate flags and <c>--cluster</c> given, as settings (absent flags leave the file and the environment in force).</summary>
    public List<KeyValuePair<string, string?>> Read(ParseResult r) =>
    [
        new("Tls:Certificate", r.GetValue(certificate)),
        new("Tls:Ca", r.GetValue(ca)),
        new("Client:Cluster", use == ClusterUse.Node ? null : r.GetValue(cluster)),
    ];

    /// <summary>
    /// The client's settings when the job goes to a cluster (<c>--cluster</c> given), else null: the
    /// settings file, the environment, then these flags. <c>--listen</c> or <c>--advertise</c> without
    /// <c>--cluster</c> is a usage error: they only place a cluster client on its network.
    /// </summary>
    public ClusterClientOptions? Client(ParseResult r)
    {
        if (use != ClusterUse.Client)
        {
            throw new InvalidOperationException("these flags were added without the client's");
        }

        if (r.GetValue(cluster) is null)
        {
            foreach (var (option, name) in new[] { (listen, "--listen"), (advertise, "--advertise") })
            {
                if (r.GetValue(option) is not null)
                {
                    throw new UsageException($"{name} needs --cluster: it places this client on a cluster's network");
                }
            }

            return null;
        }

        var settings = Read(r);
        settings.Add(new("Client:Advertise", r.GetValue(advertise)));
        if (r.GetValue(listen) is { } at)
        {
            int colon = at.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(at.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            {
                throw new UsageException($"--listen '{at}' must be address:port (port 0 for any free one)");
            }

            settings.Add(new("Client:Bind", at[..colon].Trim('[', ']')));
            settings.Add(new("Client:Port", port.ToString(CultureInfo.InvariantCulture)));
        }

        return ClusterSettings.Client(ClusterSettings.Load(ConfigFile(r), settings));
    }
}

/// <summary>Who a command's cluster flags are for.</summary>
internal enum ClusterUse
{
    /// <summary>A node: its certificates (its seeds and ports are its own flags).</summary>
    Node,

    /// <summary>An operator's command: a node's data endpoint and certificates.</summary>
    Operator,

    /// <summary>A job's client: a node's data endpoint, certificates and this client's own data port.</summary>
    Client,
}
