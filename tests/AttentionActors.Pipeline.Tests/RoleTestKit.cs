using Akka.Configuration;

namespace AttentionActors.Pipeline.Tests;

/// <summary>
/// Akka.TestKit for the role tests: the pipeline's own settings (the wire serializer bound to every
/// wire message) with <c>serialize-messages = on</c>, so every message a role sends or receives in
/// these tests has been through the wire format and back.
/// </summary>
public abstract class RoleTestKit(string? extraConfig = null) : Akka.TestKit.Xunit2.TestKit(Config(extraConfig))
{
    private static Config Config(string? extra) => ConfigurationFactory.ParseString($$"""
        akka.loggers = ["Akka.TestKit.TestEventListener, Akka.TestKit"]
        akka.actor.serialize-messages = on
        {{extra}}
        """).WithFallback(PipelineConfig.Base);
}
