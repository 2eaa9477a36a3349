using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;

namespace AttentionActors.Cli.Logging;

/// <summary>
/// Log lines for people reading a node's output: <c>12:03:04.567 warn  Node: message</c> — the time,
/// the level, the last part of the category, the message; no event ids, no scopes, and an exception's
/// message without its stack trace (the message says what went wrong; a stack is for a debugger).
/// </summary>
internal sealed class OneLineFormatter() : ConsoleFormatter(Name)
{
    public new const string Name = "attention";

    public override void Write<TState>(in LogEntry<TState> logEntry, IExternalScopeProvider? scopeProvider, TextWriter textWriter)
    {
        string message = logEntry.Formatter(logEntry.State, logEntry.Exception);
        if (logEntry.Exception is { } ex && !message.Contains(ex.Message, StringComparison.Ordinal))
        {
            message = $"{message} ({ex.GetType().Name}: {ex.Message})";
        }

        string level = logEntry.LogLevel switch
        {
            LogLevel.Trace => "trace",
            LogLevel.Debug => "debug",
            LogLevel.Information => "info ",
            LogLevel.Warning => "warn ",
            LogLevel.Error => "error",
            _ => "crit ",
        };
        string category = logEntry.Category[(logEntry.Category.LastIndexOf('.') + 1)..];
        textWriter.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {level} {category}: {message.ReplaceLineEndings(" ")}");
    }

    /// <summary>A logger factory writing such lines to stderr, at <paramref name="level"/> and above.</summary>
    public static ILoggerFactory Factory(LogLevel level) => LoggerFactory.Create(b => b
        .SetMinimumLevel(level)
        .AddConsole(c =>
        {
            c.FormatterName = Name;
            c.LogToStandardErrorThreshold = LogLevel.Trace;
        })
        .AddConsoleFormatter<OneLineFormatter, ConsoleFormatterOptions>());
}
