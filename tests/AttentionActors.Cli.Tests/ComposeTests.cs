using System.Diagnostics;
using AttentionActors.Cli.Commands.Cluster;
using YamlDotNet.RepresentationModel;

namespace AttentionActors.Cli.Tests;

/// <summary>The container topology users run: the compose file is valid, and every command, setting and certificate in it is real.</summary>
public sealed class ComposeTests
{
    private static string Root()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "AttentionActors.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("the repository root was not found");
        }

        return root;
    }

    private static YamlMappingNode Services()
    {
        var yaml = new YamlStream();
        using var reader = new StreamReader(Path.Combine(Root(), "docker-compose.yml"));
        yaml.Load(reader);
        return (YamlMappingNode)((YamlMappingNode)yaml.Documents[0].RootNode)["services"];
    }

    /// <summary>A service's value for <paramref name="key"/>, following the file's merge keys (<c>&lt;&lt;: [*node, *after-seed]</c>).</summary>
    private static YamlNode? Get(YamlMappingNode service, string key)
    {
        if (service.Children.TryGetValue(new YamlScalarNode(key), out var value))
        {
            return value;
        }

        if (!service.Children.TryGetValue(new YamlScalarNode("<<"), out var merged))
        {
            return null;
        }

        var parents = merged is YamlSequenceNode list ? list.Children.Cast<YamlMappingNode>() : [(YamlMappingNode)merged];
        return parents.Select(p => Get(p, key)).FirstOrDefault(v => v is not null);
    }

    private static string[] Command(YamlMappingNode service) => [.. ((YamlSequenceNode)Get(service, "command")!).Children.Select(c => ((YamlScalarNode)c).Value!)];

    private static Dictionary<string, string?> Environment(YamlMappingNode service)
        => ((YamlMappingNode)Get(service, "environment")!).Children.ToDictionary(e => ((YamlScalarNode)e.Key).Value!, e => ((YamlScalarNode)e.Value).Value);

    [Fact]
    public async Task Docker_compose_accepts_the_file()
    {
        var start = new ProcessStartInfo("docker-compose", ["-f", Path.Combine(Root(), "docker-compose.yml"), "--profile", "client", "config", "-q"]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var compose = Process.Start(start)!;
        string errors = await compose.StandardError.ReadToEndAsync();
        await compose.WaitForExitAsync();
        Assert.True(compose.ExitCode == 0, $"docker-compose config -q: {errors}");
    }

    [Fact]
    public void Every_service_command_parses_every_setting_is_a_real_key_and_each_process_has_the_certificate_of_its_kind()
    {
        var known = ClusterSettings.Keys.Select(k => k.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        var services = Services().Children.ToDictionary(s => ((YamlScalarNode)s.Key).Value!, s => (YamlMappingNode)s.Value);
        Assert.Equal(["seed", "reducer", "worker", "client"], services.Keys);
        foreach (var (name, service) in services)
        {
            var command = Command(service);
            var parsed = Cli.Build(TextWriter.Null, TextWriter.Null).Parse(command);
            Assert.True(parsed.Errors.Count == 0, $"{name}: `attention {string.Join(' ', command)}`: {string.Join("; ", parsed.Errors.Select(e => e.Message))}");

            var environment = Environment(service);
            foreach (var key in environment.Keys)
            {
                Assert.StartsWith(ClusterSettings.EnvironmentPrefix, key, StringComparison.Ordinal);
                string setting = key[ClusterSettings.EnvironmentPrefix.Length..].Replace("__", ":", StringComparison.Ordinal);
                Assert.True(known.Contains(setting), $"{name}: {key} is not a setting");
            }

            // Nodes prove themselves with the node certificate, the client with the client one; all trust the mounted CA.
            Assert.Equal(name == "client" ? "/certs/client.pfx" : "/certs/node.pfx", environment["ATTENTION_TLS__CERTIFICATE"]);
            Assert.Equal("/certs/ca.pem", environment["ATTENTION_TLS__CA"]);
            Assert.Contains(((YamlSequenceNode)Get(service, "volumes")!).Children, v => ((YamlScalarNode)v).Value!.EndsWith(":/certs:ro", StringComparison.Ordinal));
        }

        // The seed has a fixed name and ports; everyone else joins it there; the client submits to its data port, published on the host.
        var seed = Command(services["seed"]);
        Assert.Equal("seed", seed[Array.IndexOf(seed, "--advertise") + 1]);
        Assert.Equal("4550", seed[Array.IndexOf(seed, "--port") + 1]);
        Assert.Equal("4551", seed[Array.IndexOf(seed, "--data-port") + 1]);
        foreach (var name in new[] { "reducer", "worker" })
        {
            var command = Command(services[name]);
            Assert.Equal("seed:4550", command[Array.IndexOf(command, "--seed") + 1]);
        }

        var client = Command(services["client"]);
        Assert.Equal("seed:4551", client[Array.IndexOf(client, "--cluster") + 1]);
        Assert.Contains(((YamlSequenceNode)services["seed"]["ports"]).Children, p => ((YamlScalarNode)p).Value!.EndsWith(":4551", StringComparison.Ordinal));
    }
}
