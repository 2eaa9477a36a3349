using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// A real process — the built <c>attention</c> command line, or the tests' node host — run by
/// <c>dotnet</c>: a cluster node or a client run. Its output is kept for assertions and failure messages; it can be stopped
/// (SIGTERM), killed (SIGKILL), frozen (SIGSTOP) and thawed (SIGCONT).
/// </summary>
public sealed partial class NodeProcess : IAsyncDisposable
{
    private readonly Process process;
    private readonly ConcurrentQueue<string> lines = new();

    private NodeProcess(Process process, string name)
    {
        this.process = process;
        Name = name;
        process.OutputDataReceived += (_, e) => Keep(e.Data);
        process.ErrorDataReceived += (_, e) => Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string Name { get; }

    public bool HasExited => process.HasExited;

    public int ExitCode => process.ExitCode;

    public string Output => string.Join('\n', lines);

    /// <summary>The repository's root, found from the tests' own folder.</summary>
    public static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "AttentionActors.sln")))
            {
                dir = dir.Parent;
            }

            return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
        }
    }

    private static string Configuration => AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Debug" : "Release";

    /// <summary>The built command line (same configuration as the tests).</summary>
    public static string CliPath => Built(Path.Combine(Root, "src", "AttentionActors.Cli", "bin", Configuration, "net10.0", "attention.dll"));

    /// <summary>The tests' own node host, with faults to inject.</summary>
    public static string TestNodePath => Built(Path.Combine(Root, "tests", "AttentionActors.Cluster.TestNode", "bin", Configuration, "net10.0", "AttentionActors.Cluster.TestNode.dll"));

    private static string Built(string path) => File.Exists(path) ? path : throw new InvalidOperationException($"{path} is missing: build the solution first");

    /// <summary>Starts <c>attention</c> with <paramref name="args"/>.</summary>
    public static NodeProcess Start(string name, IDictionary<string, string> environment, params string[] args) => Run(CliPath, name, environment, args);

    /// <summary>Starts the test node host with <paramref name="args"/>.</summary>
    public static NodeProcess StartTestNode(string name, IDictionary<string, string> environment, params string[] args) => Run(TestNodePath, name, environment, args);

    private static NodeProcess Run(string program, string name, IDictionary<string, string> environment, string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(program);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        return new NodeProcess(Process.Start(start) ?? throw new InvalidOperationException($"could not start {name}"), name);
    }

    /// <summary>Waits until a line containing <paramref name="text"/> has been printed; fails with the output after <paramref name="timeout"/>.</summary>
    public async Task WaitForOutput(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!lines.Any(l => l.Contains(text, StringComparison.Ordinal)))
        {
            if (DateTime.UtcNow > deadline || process.HasExited)
            {
                await Task.Delay(100);
                throw new TimeoutException($"{Name} did not print '{text}' within {timeout.TotalSeconds:F0} s (exited: {process.HasExited}):\n{Tail()}");
            }

            await Task.Delay(50);
        }
    }

    public async Task<int> WaitForExit(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"{Name} did not exit within {timeout.TotalSeconds:F0} s:\n{Tail()}");
        }

        process.WaitForExit();
        return process.ExitCode;
    }

    public string Tail(int count = 40) => string.Join('\n', lines.TakeLast(count));

    public void Signal(int signal)
    {
        if (!process.HasExited)
        {
            _ = Kill(process.Id, signal);
        }
    }

    public void Terminate() => Signal(15);

    public void KillHard() => Signal(9);

    public void Freeze() => Signal(19);

    public void Thaw() => Signal(18);

    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            Thaw();
            KillHard();
            await process.WaitForExitAsync();
        }

        process.Dispose();
    }

    private void Keep(string? line)
    {
        if (line is not null)
        {
            lines.Enqueue(line);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
