using Akka.Actor;
using Akka.Actor.Setup;
using Akka.Dispatch;
using Akka.Event;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Pipeline;

/// <summary>The logger factory an actor system's log events go to (<see cref="AkkaLogging"/>); without it they are dropped.</summary>
public sealed class LoggerFactorySetup(ILoggerFactory factory) : Setup
{
    public ILoggerFactory Factory { get; } = factory;
}

/// <summary>
/// Akka's logger for the pipeline: each log event becomes one line of the process's
/// <see cref="ILoggerFactory"/> under the category of the actor that logged it, with an
/// exception's message but not its stack trace (a lost connection is one warning, not a page).
/// </summary>
public sealed class AkkaLogging : ReceiveActor, IRequiresMessageQueue<ILoggerMessageQueueSemantics>
{
    public AkkaLogging()
    {
        var factory = Context.System.Settings.Setup.Get<LoggerFactorySetup>().Select(s => s.Factory).GetOrElse(null!);
        Receive<InitializeLogger>(_ => Sender.Tell(new LoggerInitialized()));
        Receive<LogEvent>(e =>
        {
            if (factory is null)
            {
                return;
            }

            var logger = factory.CreateLogger(Category(e.LogSource));
            var level = e.LogLevel() switch
            {
                Akka.Event.LogLevel.DebugLevel => Microsoft.Extensions.Logging.LogLevel.Debug,
                Akka.Event.LogLevel.InfoLevel => Microsoft.Extensions.Logging.LogLevel.Information,
                Akka.Event.LogLevel.WarningLevel => Microsoft.Extensions.Logging.LogLevel.Warning,
                _ => Microsoft.Extensions.Logging.LogLevel.Error,
            };

            // A connection between nodes that closes is routine (a duplicate one, a node leaving) or is
            // reported once, in the pipeline's own words, when heartbeats stop: Akka's page of it is detail.
            // A message refused at decode is not routine: it keeps its warning, one line per message.
            // A channel Akka's transport could not untrack while shutting down is detail too.
            string raw = e.Message?.ToString() ?? "";
            if (((e.LogSource.Contains("ndpointWriter", StringComparison.Ordinal) || e.LogSource.Contains("ndpointManager", StringComparison.Ordinal))
                && !raw.StartsWith("Deserialization failed", StringComparison.Ordinal))
                || raw.StartsWith("Unable to REMOVE channel", StringComparison.Ordinal))
            {
                level = Microsoft.Extensions.Logging.LogLevel.Debug;
            }
            if (!logger.IsEnabled(level))
            {
                return;
            }

            string text = WithoutStack(e.Message?.ToString() ?? "");
            // The innermost cause names what was wrong (a codec's check, a socket's error); Akka's wrappers repeat the rest.
            var cause = e.Cause;
            while (cause?.InnerException is { } inner)
            {
                cause = inner;
            }
            if (cause is not null && !text.Contains(cause.Message, StringComparison.Ordinal))
            {
                text = $"{text} ({cause.GetType().Name}: {WithoutStack(cause.Message)})";
            }

            // The text is Akka's already-formatted message, not a template: it goes out as it is.
            logger.Log(level, "{Message}", text);
        });
    }

    /// <summary>The text up to the first stack frame some of Akka's messages carry inline ("   at Akka.Remote…").</summary>
    private static string WithoutStack(string text)
    {
        int frame = text.IndexOf("   at ", StringComparison.Ordinal);
        return frame < 0 ? text : text[..frame].TrimEnd() + (text.TrimEnd().EndsWith(']') ? "]" : "");
    }

    /// <summary>A short category: the actor's name without the system's address (akka://attention/user/reducer → Akka.reducer).</summary>
    private static string Category(string source)
    {
        int user = source.IndexOf("/user/", StringComparison.Ordinal);
        string tail = user >= 0 ? source[(user + 6)..] : source.Split('/').LastOrDefault() ?? source;
        int bracket = tail.IndexOf('(', StringComparison.Ordinal);
        return $"Akka.{(bracket > 0 ? tail[..bracket] : tail).Trim()}";
    }
}

/// <summary>How top-level roles are supervised: restarted on a failure (each role tells whom it concerns what it lost), at most 10 times a minute, then stopped.</summary>
public sealed class RoleSupervision : SupervisorStrategyConfigurator
{
    public override SupervisorStrategy Create() => new OneForOneStrategy(10, TimeSpan.FromMinutes(1), _ => Directive.Restart);
}
