using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Transport;

namespace AttentionActors.Cli.Commands;

/// <summary><c>attention cluster status</c>: the live nodes, from their heartbeats.</summary>
internal static class ClusterCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var status = new Command("status", "List the live nodes of a cluster (name, roles, host, SIMD, threads, uptime, shards done, in flight, last heartbeat)");
        var flags = BrokerFlags.Add(status);
        var config = new Option<string?>("--config") { Description = "JSON settings file (its Broker section is used)" };
        var json = new Option<bool>("--json") { Description = "Print JSON for scripts instead of a table" };
        var listen = new Option<double>("--listen") { Description = "Seconds to collect heartbeats [2.5 heartbeat intervals]", DefaultValueFactory = _ => 0 };
        status.Options.Add(config);
        status.Options.Add(json);
        status.Options.Add(listen);
        status.SetAction(async (r, cancellationToken) =>
        {
            BrokerOptions broker;
            try
            {
                (_, broker) = NodeConfiguration.Load(r.GetValue(config), flags.Read(r).Where(f => f.Value is not null));
            }
            catch (UsageException ex)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 2;
            }

            try
            {
                await using var client = await ClusterClient.ConnectAsync(broker, cancellationToken: cancellationToken);
                double seconds = r.GetValue(listen) > 0 ? r.GetValue(listen) : broker.HeartbeatInterval.TotalSeconds * 2.5;
                await Task.Delay(TimeSpan.FromSeconds(seconds), cancellationToken);
                var now = DateTimeOffset.UtcNow;
                var nodes = client.Members
                    .Where(m => !m.Heartbeat.Roles.Contains(Cluster.NodeRoles.Client))
                    .OrderBy(m => m.Heartbeat.Node, StringComparer.Ordinal)
                    .Select(m => new NodeStatus(
                        m.Heartbeat.Node,
                        m.Heartbeat.Roles,
                        m.Heartbeat.Host,
                        m.Heartbeat.ProcessId,
                        m.Heartbeat.Simd,
                        m.Heartbeat.Threads,
                        Math.Round((now.ToUnixTimeMilliseconds() - m.Heartbeat.StartedUnixMs) / 1000.0, 1),
                        m.Heartbeat.ShardsDone,
                        m.Heartbeat.InFlight,
                        Math.Round((now - m.SeenAt).TotalSeconds, 2)))
                    .ToList();
                if (r.GetValue(json))
                {
                    stdout.WriteLine(JsonSerializer.Serialize(new { broker = client.Broker, nodes }, JsonOptions));
                }
                else
                {
                    Print(stdout, client.Broker, nodes);
                }

                return 0;
            }
            catch (BrokerUnreachableException ex)
            {
                stderr.WriteLine($"attention: {ex.Message}");
                return 1;
            }
        });
        return new Command("cluster", "Inspect a running cluster") { status };
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    /// <summary>One row of the status table.</summary>
    internal sealed record NodeStatus(string Name, IReadOnlyList<string> Roles, string Host, int Pid, string Simd, int Threads, double UptimeSeconds, long ShardsDone, int InFlight, double LastHeartbeatSecondsAgo);

    private static void Print(TextWriter stdout, string broker, List<NodeStatus> nodes)
    {
        stdout.WriteLine($"cluster on {broker}: {nodes.Count} live {(nodes.Count == 1 ? "node" : "nodes")}");
        string[] header = ["NAME", "ROLES", "HOST", "SIMD", "THREADS", "UPTIME", "SHARDS DONE", "IN FLIGHT", "LAST HEARTBEAT"];
        var rows = nodes.Select(n => new[]
        {
            n.Name, string.Join(',', n.Roles), n.Host, n.Simd, n.Threads.ToString(CultureInfo.InvariantCulture),
            Uptime(n.UptimeSeconds), n.ShardsDone.ToString(CultureInfo.InvariantCulture), n.InFlight.ToString(CultureInfo.InvariantCulture),
            string.Create(CultureInfo.InvariantCulture, $"{n.LastHeartbeatSecondsAgo:F1} s ago"),
        }).ToList();
        var widths = header.Select((h, i) => rows.Select(row => row[i].Length).Append(h.Length).Max()).ToArray();
        foreach (var row in rows.Prepend(header))
        {
            stdout.WriteLine(string.Join("  ", row.Select((cell, i) => cell.PadRight(widths[i]))).TrimEnd());
        }
    }

    private static string Uptime(double seconds)
    {
        var t = TimeSpan.FromSeconds(seconds);
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:D2}s" : $"{t.Seconds}s";
    }
}
