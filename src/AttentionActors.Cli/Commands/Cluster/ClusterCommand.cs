using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Pipeline;

namespace AttentionActors.Cli.Commands.Cluster;

/// <summary>
/// <c>attention cluster …</c>: the operator's commands — make the certificates, bring a local cluster
/// of processes up and down, and on any running cluster list its members and jobs, cancel a job,
/// drain a node. The commands on a running cluster use a node certificate (a client's may not ask
/// them); they default to the cluster <c>cluster up</c> started.
/// </summary>
internal static class ClusterCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var dir = new Option<string?>("--dir") { Description = $"The cluster's folder: certificates, state and logs [{ClusterSettings.HomeDirectory}, or $ATTENTION_HOME]" };
        var command = new Command("cluster", "Operate a cluster: certificates, a local cluster of processes (up/down), members, jobs, cancel, drain")
        {
            Certs(stdout, stderr, dir),
            Up(stdout, stderr, dir),
            Down(stdout, stderr, dir),
            Status(stdout, stderr, dir),
            Jobs(stdout, stderr, dir),
            Cancel(stdout, stderr, dir),
            Drain(stdout, stderr, dir),
        };
        return command;
    }

    private static string Directory(ParseResult r, Option<string?> dir) => r.GetValue(dir) is { } d ? Path.GetFullPath(d) : ClusterSettings.HomeDirectory;

    private static Command Certs(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var command = new Command("certs", "Make a cluster's certificates: ca.pem, ca.key (keep it safe), node.pfx for nodes and operators, client.pfx for clients");
        command.Options.Add(dir);
        command.SetAction(r => Guard(stderr, () =>
        {
            string folder = Directory(r, dir);
            CertificateAuthority.Create(folder);
            stdout.WriteLine($"cluster certs: {Path.Combine(folder, CertificateAuthority.CaFile)}, {CertificateAuthority.NodeFile} and {CertificateAuthority.ClientFile} made in {folder} (keys readable by you only)");
            return Task.FromResult(0);
        }));
        return command;
    }

    private static Command Up(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var workers = new Option<int>("--workers") { Description = "Worker processes", DefaultValueFactory = _ => 2 };
        var threads = new Option<int>("--threads") { Description = "Threads per worker process", DefaultValueFactory = _ => 1 };
        var bind = new Option<string>("--bind") { Description = "Address the nodes listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var advertise = new Option<string?>("--advertise") { Description = "Host name or address others reach the nodes at [the bind address]" };
        var port = new Option<int>("--port") { Description = "The seed's cluster port", DefaultValueFactory = _ => 4550 };
        var dataPort = new Option<int>("--data-port") { Description = "The seed's data port (clients submit there)", DefaultValueFactory = _ => 4551 };
        var command = new Command("up", "Start a local cluster of processes (a coordinator+reducer seed and N workers), wait until every node is up, and print where to submit") { workers, threads, bind, advertise, port, dataPort };
        command.Options.Add(dir);
        command.SetAction((r, ct) => Guard(stderr, () => LocalCluster.UpAsync(Directory(r, dir), r.GetValue(workers), r.GetValue(threads), r.GetValue(bind)!, r.GetValue(advertise), r.GetValue(port), r.GetValue(dataPort), stdout, stderr, ct)));
        return command;
    }

    private static Command Down(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var command = new Command("down", "Stop the local cluster `cluster up` started (SIGTERM: running shards finish), then any node left (SIGKILL)");
        command.Options.Add(dir);
        command.SetAction(r => Guard(stderr, () => LocalCluster.DownAsync(Directory(r, dir), stdout)));
        return command;
    }

    private static Command Status(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var json = new Option<bool>("--json") { Description = "Print JSON for scripts instead of a table" };
        var command = new Command("status", "List the cluster's members: status (Up, Leaving, …), reachability, roles, data endpoint, SIMD, threads, uptime, shards done and in flight, data-plane bytes in and out") { json };
        command.Options.Add(dir);
        var flags = ClusterFlags.Add(command, ClusterUse.Operator);
        command.SetAction((r, ct) => Guard(stderr, async () =>
        {
            await using var op = Operator(r, flags, dir);
            var status = await op.StatusAsync(ct);
            if (r.GetValue(json))
            {
                stdout.WriteLine(JsonSerializer.Serialize(status, Json));
                return 0;
            }

            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            stdout.WriteLine($"cluster of {status.AnsweredBy}: {status.Members.Count} member{(status.Members.Count == 1 ? "" : "s")}, {status.Members.Count(m => m.Status == "Up" && m.Reachable)} up and reachable");
            Table(stdout, ["ADDRESS", "STATUS", "ROLES", "DATA", "SIMD", "THREADS", "UPTIME", "SHARDS DONE", "IN FLIGHT", "DATA IN", "DATA OUT"], status.Members.Select(m => new[]
            {
                m.Address, m.Reachable ? m.Status : $"{m.Status} UNREACHABLE", string.Join(',', m.Roles), m.Card?.DataEndpoint ?? "?", m.Card?.Simd ?? "?",
                m.Card?.Threads.ToString(CultureInfo.InvariantCulture) ?? "?", m.Card is { } c ? Uptime((now - c.StartedUnixMs) / 1000.0) : "?",
                m.Card?.ShardsDone.ToString(CultureInfo.InvariantCulture) ?? "?", m.Card is { } k ? $"{k.InFlight}{(k.Draining ? " (draining)" : "")}" : "?",
                m.Card is { } i ? JobEstimate.Size(i.BytesIn) : "?", m.Card is { } o ? JobEstimate.Size(o.BytesOut) : "?",
            }));
            return 0;
        }));
        return command;
    }

    private static Command Jobs(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var json = new Option<bool>("--json") { Description = "Print JSON for scripts instead of a table" };
        var command = new Command("jobs", "List the jobs running on every coordinator: progress, elapsed time, coordinator, reducer and the worker nodes used") { json };
        command.Options.Add(dir);
        var flags = ClusterFlags.Add(command, ClusterUse.Operator);
        command.SetAction((r, ct) => Guard(stderr, async () =>
        {
            await using var op = Operator(r, flags, dir);
            var jobs = await op.JobsAsync(ct);
            if (r.GetValue(json))
            {
                var rows = jobs.Jobs.Select(j => new { Job = j.Job.Value, j.Coordinator, j.Reducer, j.ShardsDone, j.ShardsTotal, j.ElapsedSeconds, j.Workers });
                stdout.WriteLine(JsonSerializer.Serialize(new { Jobs = rows }, Json));
                return 0;
            }

            stdout.WriteLine($"{jobs.Jobs.Count} running job{(jobs.Jobs.Count == 1 ? "" : "s")}");
            Table(stdout, ["JOB", "SHARDS", "ELAPSED", "COORDINATOR", "REDUCER", "WORKERS"], jobs.Jobs.Select(j => new[]
            {
                j.Job.Value, $"{j.ShardsDone}/{j.ShardsTotal}", Uptime(j.ElapsedSeconds), j.Coordinator, j.Reducer, string.Join(' ', j.Workers),
            }));
            return 0;
        }));
        return command;
    }

    private static Command Cancel(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var job = new Argument<string>("job") { Description = "The job's id (cluster jobs lists them)" };
        var command = new Command("cancel", "Cancel a running job (its client gets a cancelled failure; its shards stop at their next panel)") { job };
        command.Options.Add(dir);
        var flags = ClusterFlags.Add(command, ClusterUse.Operator);
        command.SetAction((r, ct) => Guard(stderr, async () =>
        {
            await using var op = Operator(r, flags, dir);
            try
            {
                await op.CancelAsync(new JobId(r.GetValue(job)!), "cancelled by the operator", ct);
            }
            catch (DataPlaneException ex)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 1;
            }

            stdout.WriteLine($"cluster cancel: job {r.GetValue(job)} cancelled");
            return 0;
        }));
        return command;
    }

    private static Command Drain(TextWriter stdout, TextWriter stderr, Option<string?> dir)
    {
        var node = new Argument<string>("node") { Description = "The node's cluster address (cluster status lists them)" };
        var command = new Command("drain", "Drain a worker node: it takes no more shards, answers its running ones, and leaves the cluster") { node };
        command.Options.Add(dir);
        var flags = ClusterFlags.Add(command, ClusterUse.Operator);
        command.SetAction((r, ct) => Guard(stderr, async () =>
        {
            await using var op = Operator(r, flags, dir);
            try
            {
                await op.DrainAsync(r.GetValue(node)!, ct);
            }
            catch (DataPlaneException ex)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 1;
            }

            stdout.WriteLine($"cluster drain: {r.GetValue(node)} takes no more shards and leaves once its running ones are answered");
            return 0;
        }));
        return command;
    }

    /// <summary>An operator of the cluster named by the flags, or of the one <c>cluster up</c> started from the folder.</summary>
    private static OperatorClient Operator(ParseResult r, ClusterFlags flags, Option<string?> dir)
    {
        string folder = Directory(r, dir);
        var given = flags.Read(r);
        var config = ClusterSettings.Load(flags.ConfigFile(r), given);
        string cluster = config["Client:Cluster"] ?? LocalClusterState.Read(folder)?.Data
            ?? throw new UsageException($"no cluster given: pass --cluster host:port (a node's data endpoint), or start one with `attention cluster up`");
        var (certificate, ca, password) = ClusterSettings.Operator(config);
        if (r.GetValue(dir) is not null && given.All(g => g.Key != "Tls:Certificate" || g.Value is null))
        {
            (certificate, ca) = (Path.Combine(folder, CertificateAuthority.NodeFile), Path.Combine(folder, CertificateAuthority.CaFile));
        }

        return OperatorClient.Connect(cluster, certificate, ca, password);
    }

    /// <summary>Runs a command, turning the errors a user can cause into one line and an exit code (2 for usage, 1 for the cluster).</summary>
    private static async Task<int> Guard(TextWriter stderr, Func<Task<int>> run)
    {
        try
        {
            return await run();
        }
        catch (Exception ex) when (ex is UsageException or FormatException)
        {
            stderr.WriteLine($"attention: {ex.Message}");
            return 2;
        }
        catch (Exception ex) when (ex is CertificateFileException or DataPlaneException or ClusterUnreachableException or IOException)
        {
            stderr.WriteLine($"attention: {ex.Message}");
            return 1;
        }
    }

    private static void Table(TextWriter stdout, string[] header, IEnumerable<string[]> rows)
    {
        var all = rows.Prepend(header).ToList();
        var widths = header.Select((_, i) => all.Max(row => row[i].Length)).ToArray();
        foreach (var row in all)
        {
            stdout.WriteLine(string.Join("  ", row.Select((cell, i) => cell.PadRight(widths[i]))).TrimEnd());
        }
    }

    private static string Uptime(double seconds)
    {
        var t = TimeSpan.FromSeconds(Math.Max(0, seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:D2}s" : $"{t.Seconds}s";
    }
}
