using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace AttentionActors.Cluster;

/// <summary>
/// A throwaway RabbitMQ server of one's own (tests, benchmarks): Debian's <c>rabbitmq-server</c>
/// started directly (not via the wrapper that insists on the rabbitmq user) in a temp folder, on
/// free ports below the ephemeral range, with a random password and no guest account; stopped
/// and deleted on dispose. Several users keep apart by queue prefix.
/// </summary>
public sealed class LocalBroker : IAsyncDisposable
{
    public const string User = "attention-local";
    private const string ServerPath = "/usr/lib/rabbitmq/bin/rabbitmq-server";

    // Not /usr/sbin/rabbitmqctl: as root, that wrapper switches to the rabbitmq user and its HOME (another Erlang cookie).
    private const string CtlPath = "/usr/lib/rabbitmq/bin/rabbitmqctl";
    private readonly string folder = Path.Combine(Path.GetTempPath(), $"attention-broker-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> serverOutput = new();
    private Process? server;
    private (string CaFile, string CertFile, string KeyFile)? tls;

    public string Password { get; } = Guid.NewGuid().ToString("N");

    public int Port { get; private set; }

    public string NodeName { get; private set; } = "";

    public string Url => $"amqp://{User}:{Password}@127.0.0.1:{Port}/";

    /// <summary>The TLS port when started with a certificate, else 0.</summary>
    public int TlsPort { get; private set; }

    /// <summary><c>amqps://</c> URL of the TLS listener (started with a certificate).</summary>
    public string TlsUrl => $"amqps://{User}:{Password}@localhost:{TlsPort}/";

    /// <summary>
    /// Starts a broker and waits until it takes connections (the first boot takes 5–15 s). Given a
    /// server certificate and key (PEM), it also listens for TLS.
    /// </summary>
    public static async Task<LocalBroker> StartAsync((string CaFile, string CertFile, string KeyFile)? tls = null)
    {
        var broker = new LocalBroker { tls = tls };
        try
        {
            await broker.InitializeAsync().ConfigureAwait(false);
            return broker;
        }
        catch
        {
            await broker.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task InitializeAsync()
    {
        if (!File.Exists(ServerPath))
        {
            throw new InvalidOperationException($"{ServerPath} is missing: a local broker needs Debian's rabbitmq-server (apt-get install rabbitmq-server; ./test.sh installs it)");
        }

        Directory.CreateDirectory(folder);
        Port = FreePort();
        int distribution = FreePort(Port);
        NodeName = $"attention-test-{Port}@localhost";
        await File.WriteAllTextAsync(Path.Combine(folder, "enabled_plugins"), "[].").ConfigureAwait(false);
        string config = "loopback_users = none\n";
        if (tls is { } t)
        {
            TlsPort = FreePort(distribution);
            config += $"listeners.ssl.default = {TlsPort}\nssl_options.cacertfile = {t.CaFile}\nssl_options.certfile = {t.CertFile}\nssl_options.keyfile = {t.KeyFile}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n";
        }

        await File.WriteAllTextAsync(Path.Combine(folder, "rabbitmq.conf"), config).ConfigureAwait(false);

        // The Erlang cookie is written before the server and rabbitmqctl start: left to them, both may create it at once and disagree.
        string cookie = Path.Combine(folder, ".erlang.cookie");
        await File.WriteAllTextAsync(cookie, Guid.NewGuid().ToString("N").ToUpperInvariant()).ConfigureAwait(false);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(cookie, UnixFileMode.UserRead);
        }
        var start = new ProcessStartInfo(ServerPath) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (key, value) in Variables(distribution))
        {
            start.Environment[key] = value;
        }

        server = Process.Start(start) ?? throw new InvalidOperationException("rabbitmq-server did not start");
        server.OutputDataReceived += (_, e) => serverOutput.Enqueue(e.Data ?? "");
        server.ErrorDataReceived += (_, e) => serverOutput.Enqueue(e.Data ?? "");
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        var (code, output) = await Ctl(TimeSpan.FromSeconds(90), "-t", "80", "wait", Path.Combine(folder, "pid")).ConfigureAwait(false);
        if (code != 0)
        {
            string log = string.Join('\n', serverOutput.TakeLast(40));
            throw new InvalidOperationException($"the private broker did not start (exited: {server.HasExited}): {output}\n{log}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (server is { HasExited: false })
        {
            await Ctl(TimeSpan.FromSeconds(30), "stop").ConfigureAwait(false);
            if (!server.WaitForExit(10_000))
            {
                server.Kill(entireProcessTree: true);
            }
        }

        server?.Dispose();
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
            // Erlang may still be closing its files; the temp folder goes with the machine.
        }
    }

    /// <summary>Stops the broker's application (connections drop, queues survive) and starts it again after <paramref name="down"/>.</summary>
    public async Task RestartAppAsync(TimeSpan down)
    {
        await Ctl(TimeSpan.FromSeconds(60), "stop_app").ConfigureAwait(false);
        await Task.Delay(down).ConfigureAwait(false);
        await Ctl(TimeSpan.FromSeconds(60), "start_app").ConfigureAwait(false);
    }

    /// <summary>Runs <c>rabbitmqctl</c> against this broker.</summary>
    public async Task<(int Code, string Output)> Ctl(TimeSpan timeout, params string[] args)
    {
        var start = new ProcessStartInfo(CtlPath) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-n");
        start.ArgumentList.Add(NodeName);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        foreach (var (key, value) in Variables(0))
        {
            start.Environment[key] = value;
        }

        using var ctl = Process.Start(start)!;
        var stdout = ctl.StandardOutput.ReadToEndAsync();
        var stderr = ctl.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        await ctl.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        return (ctl.ExitCode, await stdout.ConfigureAwait(false) + await stderr.ConfigureAwait(false));
    }

    private IEnumerable<(string, string)> Variables(int distribution)
    {
        // rabbitmqctl and the server must share HOME: that is where the Erlang cookie lives.
        yield return ("HOME", folder);
        yield return ("RABBITMQ_MNESIA_BASE", Path.Combine(folder, "mnesia"));
        yield return ("RABBITMQ_LOG_BASE", Path.Combine(folder, "log"));
        yield return ("RABBITMQ_NODENAME", NodeName);
        yield return ("RABBITMQ_CONFIG_FILE", Path.Combine(folder, "rabbitmq"));
        yield return ("RABBITMQ_ENABLED_PLUGINS_FILE", Path.Combine(folder, "enabled_plugins"));
        yield return ("RABBITMQ_PID_FILE", Path.Combine(folder, "pid"));
        if (distribution > 0)
        {
            yield return ("RABBITMQ_NODE_PORT", Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            yield return ("RABBITMQ_DIST_PORT", distribution.ToString(System.Globalization.CultureInfo.InvariantCulture));
            yield return ("RABBITMQ_DEFAULT_USER", User);
            yield return ("RABBITMQ_DEFAULT_PASS", Password);
            yield return ("RABBITMQ_DEFAULT_VHOST", "/");
        }
    }

    /// <summary>A port in [20000, 32000) nothing listens on now (below the ephemeral range, so no outgoing connection takes it meanwhile).</summary>
    private static int FreePort(int except = 0)
    {
        for (int attempt = 0; attempt < 200; attempt++)
        {
            int port = Random.Shared.Next(20000, 32000);
            if (port == except || port == except + 20000)
            {
                continue;
            }

            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, port);
                listener.Start();
                listener.Stop();
                return port;
            }
            catch (SocketException)
            {
                // Taken; try another.
            }
        }

        throw new InvalidOperationException("no free port in [20000, 32000)");
    }
}

