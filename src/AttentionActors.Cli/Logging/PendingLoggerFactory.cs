using Microsoft.Extensions.Logging;

namespace AttentionActors.Cli.Logging;

/// <summary>
/// A logger factory that can be handed out before the real one is built: its loggers forward to
/// the real factory's, and the first call on one waits until that factory is ready. Building the
/// console logging takes about 40 ms (configuration, options, dependency injection), which the
/// actor system's start-up no longer waits for; its first log line comes much later, if at all.
/// The real factory stays with its owner, who disposes it.
/// </summary>
internal sealed class PendingLoggerFactory(Task<ILoggerFactory> real) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => new PendingLogger(real, categoryName);

    public void AddProvider(ILoggerProvider provider) => real.GetAwaiter().GetResult().AddProvider(provider);

    public void Dispose()
    {
    }

    private sealed class PendingLogger(Task<ILoggerFactory> real, string category) : ILogger
    {
        private ILogger? logger;

        private ILogger Logger => LazyInitializer.EnsureInitialized(ref logger, () => real.GetAwaiter().GetResult().CreateLogger(category));

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull
            => Logger.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => Logger.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => Logger.Log(logLevel, eventId, state, exception, formatter);
    }
}
