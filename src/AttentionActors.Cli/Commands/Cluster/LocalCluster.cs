using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Security;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>What <c>cluster up</c> started, kept in its folder for <c>cluster down</c>, <c>status</c> and clients.</summary>
internal sealed record LocalClusterState(string Seed, string Data, IReadOnlyList<int> Pids, string Directory)
{
    public const string FileName = "cluster.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static LocalClusterState? Read(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<LocalClusterState>(File.ReadAllText(path), Json);
        }
        catch (JsonException ex)
        {
            throw new UsageException($"{path} is not a cluster's state ({ex.Message}); remove it");
        }
    }

    public void Write() => File.WriteAllText(Path.Combine(Directory, FileName), JsonSerializer.Serialize(this, Json));

    /// <summary>Whether any of the processes is still running.</summary>
    public bool AnyAlive => Pids.Any(Alive);

    public static bool Alive(int pid)
    {
        // A node that exited after `cluster up` did is no child of this process: until whoever adopted it
        // reaps it, it is a zombie, which the process table still lists.
        string stat = $"/proc/{pid}/stat";
        if (File.Exists(stat))
        {
            try
            {
                string text = File.ReadAllText(stat);
                int close = text.LastIndexOf(')');
                return close > 0 && close + 2 < text.Length && text[close + 2] is not ('Z' or 'X');
            }
            catch (IOException)
            {
                return false;
            }
        }

        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}

/// <summary>
/// <c>attention cluster up</c> and <c>down</c>: a cluster of processes on this machine in one
/// command — a seed playing coordinator and reducer, and N worker processes — each an ordinary
/// <c>attention node</c> with its log in the cluster's folder, with certificates made there on first
/// use. It waits until every node is Up and says where to submit.
/// </summary>
internal static class LocalCluster
{
    public static async Task<int> UpAsync(string directory, int workers, int threads, string bind, string? advertise, int port, int dataPort, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        if (LocalClusterState.Read(directory) is { AnyAlive: true } running)
        {
            throw new UsageException($"a cluster is already up from {directory} (seed {running.Seed}, data {running.Data}); stop it with `attention cluster down{DirFlag(directory)}`");
        }

        if (workers is < 1 or > 256 || threads is < 1 or > 1024)
        {
            throw new UsageException($"--workers {workers} must be between 1 and 256 and --threads {threads} between 1 and 1024");
        }

        Directory.CreateDirectory(directory);
        if (!File.Exists(Path.Combine(directory, CertificateAuthority.CaFile)))
        {
            CertificateAuthority.Create(directory);
            stdout.WriteLine($"cluster up: made the cluster's CA and certificates in {directory}");
        }

        LocalClusterState state;
        TimeSpan formation;
        try
        {
            (state, formation) = await StartAsync(directory, workers, threads, bind, advertise, port, dataPort, cancellationToken);
        }
        catch (TimeoutException ex)
        {
            stderr.WriteLine($"attention: {ex.Message}");
            return 1;
        }

        string certs = directory == ClusterSettings.HomeDirectory ? "" : $" --cert {Path.Combine(directory, CertificateAuthority.ClientFile)} --ca {Path.Combine(directory, CertificateAuthority.CaFile)}";
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"cluster up in {formation.TotalSeconds:F1} s: a coordinator+reducer and {workers} worker{(workers == 1 ? "" : "s")} ({threads} thread{(threads == 1 ? "" : "s")} each); seed {state.Seed}, data {state.Data}; logs in {Path.Combine(directory, "logs")}"));
        stdout.WriteLine($"  run a job:  attention run --cluster {state.Data}{certs} --random --seq 4096 --dim 64 --causal --verify");
        stdout.WriteLine($"  add a node: attention node --roles worker --seed {state.Seed} --cert {Path.Combine(directory, CertificateAuthority.NodeFile)} --ca {Path.Combine(directory, CertificateAuthority.CaFile)}");
        stdout.WriteLine($"  look:       attention cluster status{DirFlag(directory)}        stop: attention cluster down{DirFlag(directory)}");
        return 0;
    }

    /// <summary>
    /// Starts the seed (coordinator and reducer) and <paramref name="workers"/> worker processes with
    /// the certificates in <paramref name="directory"/>, records them there, and waits until every node
    /// is Up; returns them and the time from launch to the last one Up. On a timeout the processes are stopped.
    /// </summary>
    public static async Task<(LocalClusterState State, TimeSpan Formation)> StartAsync(string directory, int workers, int threads, string bind, string? advertise, int port, int dataPort, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.Combine(directory, "logs"));
        string host = advertise ?? bind;
        string[] tls = ["--cert", Path.Combine(directory, CertificateAuthority.NodeFile), "--ca", Path.Combine(directory, CertificateAuthority.CaFile), "--bind", bind, .. advertise is null ? [] : new[] { "--advertise", advertise }];
        var clock = Stopwatch.StartNew();
        string seedLog = Path.Combine(directory, "logs", "seed.log");
        long seedLogStart = File.Exists(seedLog) ? new FileInfo(seedLog).Length : 0;
        var pids = new List<int>
        {
            Start(["node", "--roles", "coordinator,reducer", "--port", Str(port), "--data-port", Str(dataPort), .. tls], Path.Combine(directory, "logs", "seed.log")),
        };

        // Workers start once the seed is up (its log says so): one that knocks earlier is refused, and its join retries cost seconds.
        await WaitLoggedAsync(seedLog, seedLogStart, " up: roles", pids[0], TimeSpan.FromSeconds(60), cancellationToken);
        for (int w = 1; w <= workers; w++)
        {
            pids.Add(Start(["node", "--roles", "worker", "--seed", $"{host}:{port}", "--threads", Str(threads), .. tls], Path.Combine(directory, "logs", $"worker-{w}.log")));
        }

        var state = new LocalClusterState($"{host}:{port}", $"{host}:{dataPort}", pids, directory);
        state.Write();
        try
        {
            await WaitUpAsync(state, 1 + workers, TimeSpan.FromSeconds(90), cancellationToken);
        }
        catch
        {
            await StopAsync(state, TimeSpan.FromSeconds(10));
            throw;
        }

        return (state, clock.Elapsed);
    }

    public static async Task<int> DownAsync(string directory, TextWriter stdout)
    {
        if (LocalClusterState.Read(directory) is not { } state)
        {
            throw new UsageException($"no cluster was started from {directory} (no {LocalClusterState.FileName} there)");
        }

        int alive = state.Pids.Count(LocalClusterState.Alive);
        await StopAsync(state, TimeSpan.FromSeconds(40));
        File.Delete(Path.Combine(directory, LocalClusterState.FileName));
        stdout.WriteLine($"cluster down: stopped {alive} node process{(alive == 1 ? "" : "es")} started from {directory}");
        return 0;
    }

    private static string Str(int n) => n.ToString(CultureInfo.InvariantCulture);

    private static string DirFlag(string directory) => directory == ClusterSettings.HomeDirectory ? "" : $" --dir {directory}";

    /// <summary>Starts this program with <paramref name="args"/>, detached, its output appended to <paramref name="log"/>; returns its process id.</summary>
    private static int Start(string[] args, string log)
    {
        string program = Environment.ProcessPath ?? throw new InvalidOperationException("this process's program is unknown");
        string[] command = Path.GetFileNameWithoutExtension(program) == "dotnet" ? [program, System.Reflection.Assembly.GetEntryAssembly()!.Location, .. args] : [program, .. args];

        // Through a shell that execs the node with its output in the log: the node outlives this command.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec setsid \"$@\" >>\"$LOG\" 2>&1 </dev/null");
        start.ArgumentList.Add("attention-node");
        foreach (string arg in command)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["LOG"] = log;
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        return process.Id;
    }

    private static async Task WaitUpAsync(LocalClusterState state, int nodes, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last = "no answer yet";
        while (DateTime.UtcNow < deadline)
        {
            if (state.Pids.FirstOrDefault(pid => !LocalClusterState.Alive(pid)) is > 0 and var dead)
            {
                throw new TimeoutException($"node process {dead} exited while the cluster started; see the logs in {Path.Combine(state.Directory, "logs")}:\n{Tails(state.Directory)}");
            }

            try
            {
                await using var op = OperatorClient.Connect(state.Data, Path.Combine(state.Directory, CertificateAuthority.NodeFile), Path.Combine(state.Directory, CertificateAuthority.CaFile));
                var status = await op.StatusAsync(cancellationToken);
                int up = status.Members.Count(m => m.Status == "Up" && m.Card is not null);
                last = $"{up} of {nodes} nodes up";
                if (up >= nodes)
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is AttentionActors.Cluster.DataPlane.DataPlaneException or IOException)
            {
                last = ex.Message;
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new TimeoutException($"the cluster did not come up within {timeout.TotalSeconds:F0} s ({last}); see the logs in {Path.Combine(state.Directory, "logs")}:\n{Tails(state.Directory)}");
    }

    /// <summary>Waits until <paramref name="log"/> holds a line with <paramref name="text"/> past byte <paramref name="from"/> (what this start wrote), or the process <paramref name="pid"/> has exited.</summary>
    private static async Task WaitLoggedAsync(string log, long from, string text, int pid, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline && LocalClusterState.Alive(pid))
        {
            using (var stream = new FileStream(log, FileMode.OpenOrCreate, FileAccess.Read, FileShare.ReadWrite))
            using (var reader = new StreamReader(stream))
            {
                stream.Position = Math.Min(from, stream.Length);
                if ((await reader.ReadToEndAsync(cancellationToken)).Contains(text, StringComparison.Ordinal))
                {
                    return;
                }
            }

            await Task.Delay(50, cancellationToken);
        }
    }

    private static string Tails(string directory)
        => string.Join("\n", Directory.GetFiles(Path.Combine(directory, "logs"), "*.log").Order().Select(f => $"--- {Path.GetFileName(f)}\n{string.Join('\n', File.ReadLines(f).TakeLast(5))}"));

    /// <summary>SIGTERM to every process (workers first), a graceful wait, then SIGKILL to what is left.</summary>
    public static async Task StopAsync(LocalClusterState state, TimeSpan timeout)
    {
        foreach (int pid in state.Pids.Skip(1).Append(state.Pids[0]))
        {
            Signal.Send(pid, Signal.Terminate);
        }

        var deadline = DateTime.UtcNow + timeout;
        while (state.AnyAlive && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        foreach (int pid in state.Pids.Where(LocalClusterState.Alive))
        {
            Signal.Send(pid, Signal.Kill);
        }
    }
}

/// <summary>POSIX signals to processes this command started.</summary>
internal static partial class Signal
{
    public const int Kill = 9;
    public const int Terminate = 15;

    public static void Send(int pid, int signal) => _ = KillProcess(pid, signal);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillProcess(int pid, int signal);
}
