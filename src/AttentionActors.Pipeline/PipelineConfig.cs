using Akka.Configuration;

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
}
