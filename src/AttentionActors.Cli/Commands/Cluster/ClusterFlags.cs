using System.CommandLine;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>The flags every command that talks to a cluster shares, each mapped to a setting (<see cref="ClusterSettings"/>).</summary>
internal sealed class ClusterFlags
{
    private readonly Option<string?> cluster = new("--cluster") { Description = "A node's data endpoint host:port (cluster up prints it; env ATTENTION_CLIENT__CLUSTER)" };
    private readonly Option<string?> certificate = new("--cert") { Description = $"This process's certificate, PKCS#12 with its key [{Path.Combine(ClusterSettings.HomeDirectory, "node.pfx or client.pfx")}]" };
    private readonly Option<string?> ca = new("--ca") { Description = $"The cluster CA's certificate, PEM [{Path.Combine(ClusterSettings.HomeDirectory, "ca.pem")}]" };
    private readonly Option<string?> config = new("--config") { Description = "JSON settings file (sections Node, Tls, Job, Client; see cluster-config/README.md)" };

    /// <summary>Adds the flags to <paramref name="command"/>; with <paramref name="withCluster"/>, also <c>--cluster</c>.</summary>
    public static ClusterFlags Add(Command command, bool withCluster = true)
    {
        var flags = new ClusterFlags();
        if (withCluster)
        {
            command.Options.Add(flags.cluster);
        }

        command.Options.Add(flags.certificate);
        command.Options.Add(flags.ca);
        command.Options.Add(flags.config);
        return flags;
    }

    /// <summary>Whether <c>--cluster</c> was given.</summary>
    public bool Given(ParseResult r) => r.GetValue(cluster) is not null;

    public string? ConfigFile(ParseResult r) => r.GetValue(config);

    /// <summary>The flags given, as settings (absent flags leave the file and the environment in force).</summary>
    public List<KeyValuePair<string, string?>> Read(ParseResult r) =>
    [
        new("Client:Cluster", r.GetValue(cluster)),
        new("Tls:Certificate", r.GetValue(certificate)),
        new("Tls:Ca", r.GetValue(ca)),
    ];
}
