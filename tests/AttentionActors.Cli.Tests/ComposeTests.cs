using System.Diagnostics;
using AttentionActors.Cli.Commands;
using YamlDotNet.RepresentationModel;

namespace AttentionActors.Cli.Tests;

/// <summary>The container topology users run: the compose file is valid, and every command and setting in it is real.</summary>
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

    /// <summary>A service's value for <paramref name="key"/>, following the file's merge keys (<c>&lt;&lt;: *node</c>).</summary>
    private static YamlNode? Get(YamlMappingNode service, string key)
    {
        if (service.Children.TryGetValue(new YamlScalarNode(key), out var value))
        {
            return value;
        }

        return service.Children.TryGetValue(new YamlScalarNode("<<"), out var merged) && merged is YamlMappingNode parent ? Get(parent, key) : null;
    }

    [Fact]
    public async Task Docker_compose_accepts_the_file()
    {
        var start = new ProcessStartInfo("docker-compose", ["-f", Path.Combine(Root(), "docker-compose.yml"), "config", "-q"]) { RedirectStandardError = true, RedirectStandardOutput = true };
        start.Environment["BROKER_PASSWORD"] = "not-a-secret";
        using var compose = Process.Start(start)!;
        string errors = await compose.StandardError.ReadToEndAsync();
        await compose.WaitForExitAsync();
        Assert.True(compose.ExitCode == 0, $"docker-compose config -q: {errors}");

        // Without the password the file refuses to start a broker with a default one.
        start.Environment.Remove("BROKER_PASSWORD");
        using var refused = Process.Start(start)!;
        string why = await refused.StandardError.ReadToEndAsync();
        await refused.WaitForExitAsync();
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("BROKER_PASSWORD", why, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_service_command_parses_with_the_real_command_line_and_every_setting_is_a_real_key()
    {
        var known = NodeConfiguration.Keys.Select(k => k.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        var nodes = Services().Children.Where(s => ((YamlScalarNode)s.Key).Value != "rabbitmq").ToList();
        Assert.Equal(["coordinator", "reducer", "worker", "client"], nodes.Select(s => ((YamlScalarNode)s.Key).Value));
        foreach (var (name, node) in nodes.Select(s => (((YamlScalarNode)s.Key).Value!, (YamlMappingNode)s.Value)))
        {
            var command = ((YamlSequenceNode)Get(node, "command")!).Children.Select(c => ((YamlScalarNode)c).Value!).ToArray();
            var parsed = Cli.Build(TextWriter.Null, TextWriter.Null).Parse(command);
            Assert.True(parsed.Errors.Count == 0, $"{name}: `attention {string.Join(' ', command)}`: {string.Join("; ", parsed.Errors.Select(e => e.Message))}");

            var environment = ((YamlMappingNode)Get(node, "environment")!).Children.ToDictionary(e => ((YamlScalarNode)e.Key).Value!, e => ((YamlScalarNode)e.Value).Value);
            foreach (var key in environment.Keys)
            {
                Assert.StartsWith(NodeConfiguration.EnvironmentPrefix, key, StringComparison.Ordinal);
                string setting = key[NodeConfiguration.EnvironmentPrefix.Length..].Replace("__", ":", StringComparison.Ordinal);
                Assert.True(known.Contains(setting), $"{name}: {key} is not a setting (known: {string.Join(", ", known)})");
            }

            // The nodes reach the broker the compose file starts, with the credentials it is created with.
            Assert.Equal("amqp://rabbitmq:5672/", environment["ATTENTION_BROKER__URL"]);
            if (command.Contains("--broker"))
            {
                Assert.Equal("amqp://rabbitmq:5672/", command[Array.IndexOf(command, "--broker") + 1]);
            }
        }

        var broker = (YamlMappingNode)Services()["rabbitmq"];
        var brokerEnvironment = (YamlMappingNode)broker["environment"];
        var first = (YamlMappingNode)nodes[0].Value;
        var nodeEnvironment = (YamlMappingNode)Get(first, "environment")!;
        Assert.Equal(((YamlScalarNode)brokerEnvironment["RABBITMQ_DEFAULT_USER"]).Value, ((YamlScalarNode)nodeEnvironment["ATTENTION_BROKER__USERNAME"]).Value);
        Assert.Equal(((YamlScalarNode)brokerEnvironment["RABBITMQ_DEFAULT_PASS"]).Value, ((YamlScalarNode)nodeEnvironment["ATTENTION_BROKER__PASSWORD"]).Value);
        Assert.Equal("true", ((YamlScalarNode)broker["init"]).Value);
    }
}
