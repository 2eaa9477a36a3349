using Akka.Actor;
using Akka.Actor.Internal;
using Akka.Actor.Setup;
using Akka.Configuration;
using Akka.Util;

namespace AttentionActors.Pipeline;

/// <summary>
/// The actor system settings every process of the pipeline shares: the wire serializer bound to
/// <see cref="IWireMessage"/>, supervision of the top-level roles, and quiet logging (warnings and
/// errors reach the <see cref="Microsoft.Extensions.Logging.ILoggerFactory"/> the caller gives).
/// </summary>
public static class PipelineConfig
{
    /// <summary>The HOCON every actor system of the pipeline starts from.</summary>
    public static Config Base { get; } = ConfigurationFactory.ParseString("""
        akka {
          loglevel = WARNING
          stdout-loglevel = OFF
          loggers = ["AttentionActors.Pipeline.AkkaLogging, AttentionActors.Pipeline"]
          logger-startup-timeout = 10s
          log-dead-letters = off
          log-dead-letters-during-shutdown = off
          actor {
            guardian-supervisor-strategy = "AttentionActors.Pipeline.RoleSupervision, AttentionActors.Pipeline"
            serializers.attention = "AttentionActors.Pipeline.Wire.WireSerializer, AttentionActors.Pipeline"
            serialization-bindings {
              "AttentionActors.Pipeline.IWireMessage, AttentionActors.Pipeline" = attention
            }
            serialization-identifiers {
              "AttentionActors.Pipeline.Wire.WireSerializer, AttentionActors.Pipeline" = 7351
            }
          }
        }
        """);

    /// <summary>
    /// Every message between local actors goes through the wire serializer and back (Akka's
    /// <c>serialize-messages</c>): a test setting that proves each one survives the wire.
    /// </summary>
    public static Config SerializeMessages { get; } = ConfigurationFactory.ParseString("akka.actor.serialize-messages = on");

    /// <summary>
    /// Creates and starts an actor system from <paramref name="config"/> and <paramref name="setups"/>,
    /// as <c>ActorSystem.Create(name, ActorSystemSetup)</c> does with a <see cref="BootstrapSetup"/>
    /// config, minus one step: that overload reads the application's XML configuration file
    /// (<c>ConfigurationManager.GetSection("akka")</c>) even when the setup carries the config, and
    /// throws the result away. Loading System.Configuration, XML and cryptography for that took about
    /// a third of a small job's start-up. This program has no such file; its settings are the HOCON here.
    /// </summary>
    public static ActorSystem CreateSystem(string name, Config config, params Setup[] setups)
    {
        var setup = ActorSystemSetup.Create([BootstrapSetup.Create().WithConfig(config), .. setups]);
        var system = new ActorSystemImpl(name, config, setup, Option<Props>.None);
        system.Start();
        return system;
    }
}
