using System.Globalization;
using System.Text.Json;
using AttentionActors.Cli.Npy;
using AttentionActors.Kernels.Tests;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// The command line as users run it, each command a real process: <c>inspect</c> and <c>mha</c> on
/// a cluster write the very files single node writes; <c>run --cluster --verify</c> checks itself.
/// </summary>
[Collection(MixedClusterCollection.Name)]
public sealed class CommandLineTests(MixedCluster cluster) : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-cli-").FullName;

    private string PathOf(string name) => Path.Combine(dir, name);

    private string[] OnCluster => ["--cluster", cluster.Harness.Data, "--cert", TestCertificates.Client, "--ca", TestCertificates.Ca];

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>Runs <c>attention</c> with <paramref name="args"/> to its end: exit code and output (stdout and stderr).</summary>
    internal static async Task<(int Code, string Output)> Attention(TimeSpan timeout, IDictionary<string, string>? environment, params string[] args)
    {
        await using var process = NodeProcess.Start($"attention {string.Join(' ', args.Take(2))}", environment ?? new Dictionary<string, string>(), args);
        int code = await process.WaitForExit(timeout);
        return (code, process.Output);
    }

    private string Save(string name, int seed, params int[] shape)
    {
        NpyFile.Write(PathOf(name), TestData.Uniform(shape.Aggregate(1, (a, d) => a * d), seed), shape);
        return PathOf(name);
    }

    /// <summary>Fails naming the first differing byte of two files that must be identical.</summary>
    private static void AssertSameBytes(string expected, string actual)
    {
        byte[] a = File.ReadAllBytes(expected);
        byte[] b = File.ReadAllBytes(actual);
        int first = Enumerable.Range(0, Math.Min(a.Length, b.Length)).FirstOrDefault(i => a[i] != b[i], -1);
        Assert.True(a.Length == b.Length && first < 0, $"{Path.GetFileName(actual)} differs from {Path.GetFileName(expected)}: {b.Length} bytes against {a.Length}, first difference at byte {first}");
    }

    [Fact]
    public async Task Inspect_on_the_cluster_writes_every_file_single_node_writes_byte_for_byte()
    {
        string[] inputs = ["inspect", "--q", Save("q.npy", 1, 2, 3, 300, 32), "--k", Save("k.npy", 2, 2, 3, 300, 32), "--v", Save("v.npy", 3, 2, 3, 300, 32), "--causal", "--quiet",
            "--rows", "10:70", "--cols", "0:90", "--head", "1", "--batch-index", "1"];
        string[] outputs = ["out", "lse-out", "entropy-out", "coverage-out", "weights-out", "heatmap"];
        string[] Files(string tag) => [.. outputs.SelectMany(o => new[] { $"--{o}", PathOf($"{tag}-{o}.{(o == "heatmap" ? "svg" : "npy")}") })];

        var (code, output) = await Attention(TimeSpan.FromMinutes(2), null, [.. inputs, .. Files("cluster"), .. OnCluster]);
        Assert.True(code == 0, $"inspect --cluster exited {code}:\n{output}\n{cluster.Harness.Logs()}");
        var (single, singleOutput) = await Attention(TimeSpan.FromMinutes(2), null, [.. inputs, .. Files("single"), "--single-node", "--workers", "1"]);
        Assert.True(single == 0, $"inspect --single-node exited {single}:\n{singleOutput}");

        foreach (string o in outputs)
        {
            string ext = o == "heatmap" ? "svg" : "npy";
            AssertSameBytes(PathOf($"single-{o}.{ext}"), PathOf($"cluster-{o}.{ext}"));
        }
    }

    [Fact]
    public async Task Mha_on_the_cluster_writes_the_layer_single_node_writes_byte_for_byte_and_run_verifies_itself()
    {
        string[] layer = ["mha", "--x", Save("x.npy", 4, 2, 96, 24), "--wq", Save("wq.npy", 5, 24, 24), "--wk", Save("wk.npy", 6, 24, 24), "--wv", Save("wv.npy", 7, 24, 24),
            "--wo", Save("wo.npy", 8, 16, 24), "--bq", Save("bq.npy", 9, 24), "--heads", "4", "--causal", "--block", "16"];
        var (code, output) = await Attention(TimeSpan.FromMinutes(2), null, [.. layer, "--out", PathOf("y-cluster.npy"), "--weights-avg-out", PathOf("avg-cluster.npy"), .. OnCluster]);
        Assert.True(code == 0, $"mha --cluster exited {code}:\n{output}\n{cluster.Harness.Logs()}");
        Assert.Contains("mha (", output, StringComparison.Ordinal);
        var (single, singleOutput) = await Attention(TimeSpan.FromMinutes(2), null, [.. layer, "--out", PathOf("y-single.npy"), "--weights-avg-out", PathOf("avg-single.npy"), "--single-node", "--workers", "1"]);
        Assert.True(single == 0, $"mha --single-node exited {single}:\n{singleOutput}");
        AssertSameBytes(PathOf("y-single.npy"), PathOf("y-cluster.npy"));
        AssertSameBytes(PathOf("avg-single.npy"), PathOf("avg-cluster.npy"));

        // --verify computes the job again on a single node and against the float64 reference, and says so.
        var (verified, verifyOutput) = await Attention(TimeSpan.FromMinutes(2), null, ["run", "--random", "--seq", "700", "--heads", "3", "--dim", "48", "--causal", "--window", "200", "--verify", "--quiet", .. OnCluster]);
        Assert.True(verified == 0, $"run --cluster --verify exited {verified}:\n{verifyOutput}");
        Assert.Contains("agree bit for bit: yes", verifyOutput, StringComparison.Ordinal);
        Assert.Contains("within the contract", verifyOutput, StringComparison.Ordinal);
    }
}

/// <summary>
/// A cluster's life through its commands, on a cluster of its own: <c>cluster up</c>, <c>status</c>
/// (table and JSON), <c>jobs</c>, <c>cancel</c>, <c>drain</c>, <c>down</c>; and the exit codes of a
/// node or a client that cannot start or reach anything.
/// </summary>
public sealed class OperatorCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-ops-").FullName;

    /// <summary>No command here may touch the user's own cluster folder.</summary>
    private Dictionary<string, string> Environment => new() { ["ATTENTION_HOME"] = Path.Combine(dir, "home") };

    public void Dispose()
    {
        // Whatever a failed test left running goes with the folder.
        string state = Path.Combine(dir, "cluster", "cluster.json");
        if (File.Exists(state))
        {
            foreach (var pid in JsonDocument.Parse(File.ReadAllText(state)).RootElement.GetProperty("pids").EnumerateArray())
            {
                try
                {
                    using var process = System.Diagnostics.Process.GetProcessById(pid.GetInt32());
                    process.Kill();
                }
                catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
                {
                    // Gone already.
                }
            }
        }

        Directory.Delete(dir, recursive: true);
    }

    private Task<(int Code, string Output)> Attention(TimeSpan timeout, params string[] args) => CommandLineTests.Attention(timeout, Environment, args);

    private static string Json(string output) => output[output.IndexOf('{', StringComparison.Ordinal)..];

    [Fact]
    public async Task Bench_cluster_forms_its_own_cluster_and_reports_bits_bytes_against_the_dry_run_and_speed()
    {
        var (code, output) = await Attention(TimeSpan.FromMinutes(3), "bench", "--cluster", "--seq", "1024", "--dim", "16", "--heads", "2", "--workers", "2", "--repeat", "1");
        Assert.True(code == 0, $"bench --cluster exited {code}:\n{output}");
        Assert.Contains("2 single-thread worker processes, formed in", output, StringComparison.Ordinal);
        Assert.Matches(@"data plane: \d+\.\d\d GiB/s one way", output);

        // The data plane's bytes, counted by the nodes and the client, against the dry run's model of them.
        var moved = System.Text.RegularExpressions.Regex.Match(output, @"bytes moved: ([\d,]+) measured on the data plane, ([\d,]+) by the dry run");
        Assert.True(moved.Success, output);
        long measured = long.Parse(moved.Groups[1].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture);
        long predicted = long.Parse(moved.Groups[2].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture);
        Assert.True(predicted > 0 && Math.Abs(measured - predicted) <= 0.05 * predicted, $"measured {measured:N0} bytes against the dry run's {predicted:N0}:\n{output}");

        // The table's one row: every cluster result the embedded pipeline's bits.
        var row = output.Split('\n').Single(line => line.StartsWith("| 1024 | 16 | 2 | dense |", StringComparison.Ordinal));
        Assert.EndsWith("| yes |", row.TrimEnd(), StringComparison.Ordinal);
        Assert.Matches("worker kill: skipped|worker killed mid-shard", output);
    }

    [Fact]
    public async Task Up_status_jobs_cancel_drain_and_down_operate_a_local_cluster()
    {
        string folder = Path.Combine(dir, "cluster");
        string port = ClusterHarness.FreePort().ToString(CultureInfo.InvariantCulture);
        string dataPort = ClusterHarness.FreePort().ToString(CultureInfo.InvariantCulture);
        var (up, upOutput) = await Attention(TimeSpan.FromMinutes(2), "cluster", "up", "--dir", folder, "--workers", "2", "--port", port, "--data-port", dataPort);
        Assert.True(up == 0, $"cluster up exited {up}:\n{upOutput}");
        Assert.Contains($"data 127.0.0.1:{dataPort}", upOutput, StringComparison.Ordinal);
        Assert.All(new[] { "ca.pem", "ca.key", "node.pfx", "client.pfx", "cluster.json" }, f => Assert.True(File.Exists(Path.Combine(folder, f)), $"{f} missing in {folder}"));
        string[] client = ["--cluster", $"127.0.0.1:{dataPort}", "--cert", Path.Combine(folder, "client.pfx"), "--ca", Path.Combine(folder, "ca.pem")];

        // Status: three members Up and reachable, the seed coordinator and reducer, two workers, each with its card.
        var (status, statusOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "status", "--dir", folder, "--json");
        Assert.True(status == 0, statusOutput);
        var members = JsonDocument.Parse(Json(statusOutput)).RootElement.GetProperty("members").EnumerateArray().ToList();
        Assert.Equal(3, members.Count);
        Assert.All(members, m => Assert.True(m.GetProperty("status").GetString() == "Up" && m.GetProperty("reachable").GetBoolean() && m.GetProperty("card").ValueKind == JsonValueKind.Object, m.ToString()));
        var workers = members.Where(m => m.GetProperty("roles").EnumerateArray().Any(r => r.GetString() == "worker")).Select(m => m.GetProperty("address").GetString()!).ToList();
        Assert.Equal(2, workers.Count);
        var (table, tableOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "status", "--dir", folder);
        Assert.True(table == 0 && tableOutput.Contains("3 members, 3 up and reachable", StringComparison.Ordinal), tableOutput);

        // A long job shows in `jobs`; `cancel` ends it: the client fails naming the operator, and leaves no output file.
        // Long enough (9 TFLOP) that listing and cancelling, each a process started under the suite's load, come first.
        string output = Path.Combine(dir, "long.npy");
        await using (var job = NodeProcess.Start("long job", Environment, ["run", "--random", "--seq", "65536", "--heads", "8", "--dim", "64", "--out", output, "--quiet", .. client]))
        {
            // The job is listed, then cancelled; a job submitted again under a new id (its coordinator
            // was slow to answer under load) is listed and cancelled in turn.
            bool cancelled = false;
            string tried = "";
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
            while (!cancelled && DateTime.UtcNow < deadline && !job.HasExited)
            {
                var (jobs, jobsOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "jobs", "--dir", folder, "--json");
                Assert.True(jobs == 0, jobsOutput);
                var listed = JsonDocument.Parse(Json(jobsOutput)).RootElement.GetProperty("jobs").EnumerateArray().ToList();
                if (listed.Count == 1 && listed[0].GetProperty("job").GetString() is { } id)
                {
                    var (cancel, cancelOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "cancel", id, "--dir", folder);
                    cancelled = cancel == 0;
                    tried += $"cancel {id}: exit {cancel} {cancelOutput.Trim()}\n";
                }
            }

            Assert.True(cancelled, $"the job was never cancelled (client {(job.HasExited ? $"exited {job.ExitCode}" : "running")}):\n{tried}{job.Output}");
            int code = await job.WaitForExit(TimeSpan.FromSeconds(60));
            Assert.True(code == 1 && job.Output.Contains("cancelled by the operator", StringComparison.Ordinal), $"the cancelled client exited {code}:\n{job.Output}");
            Assert.False(File.Exists(output), "a cancelled job left its output file");
        }

        var (unknown, unknownOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "cancel", "no-such-job", "--dir", folder);
        Assert.True(unknown == 1 && unknownOutput.Contains("no-such-job", StringComparison.Ordinal), $"cancel of an unknown job exited {unknown}:\n{unknownOutput}");

        // Drain: the worker leaves; the cluster goes on with the other.
        var (drain, drainOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "drain", workers[0], "--dir", folder);
        Assert.True(drain == 0, drainOutput);
        int left = 0;
        for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60); DateTime.UtcNow < deadline; await Task.Delay(500))
        {
            var (_, now) = await Attention(TimeSpan.FromMinutes(1), "cluster", "status", "--dir", folder, "--json");
            left = JsonDocument.Parse(Json(now)).RootElement.GetProperty("members").GetArrayLength();
            if (left == 2)
            {
                break;
            }
        }

        Assert.True(left == 2, $"the drained worker was still a member after 60 s ({left} members)");
        var (run, runOutput) = await Attention(TimeSpan.FromMinutes(2), ["run", "--random", "--seq", "600", "--heads", "2", "--dim", "32", "--verify", "--quiet", .. client]);
        Assert.True(run == 0 && runOutput.Contains("agree bit for bit: yes", StringComparison.Ordinal), $"run after the drain exited {run}:\n{runOutput}");

        // Down stops the rest and forgets the cluster; commands then say there is none.
        var (down, downOutput) = await Attention(TimeSpan.FromMinutes(2), "cluster", "down", "--dir", folder);
        Assert.True(down == 0 && downOutput.Contains("stopped 2 node processes", StringComparison.Ordinal), $"cluster down exited {down}:\n{downOutput}");
        Assert.False(File.Exists(Path.Combine(folder, "cluster.json")));
        var (after, afterOutput) = await Attention(TimeSpan.FromMinutes(1), "cluster", "status", "--dir", folder);
        Assert.True(after == 2 && afterOutput.Contains("no cluster given", StringComparison.Ordinal), $"status after down exited {after}:\n{afterOutput}");
    }

    [Fact]
    public async Task A_node_or_client_that_cannot_start_or_reach_the_cluster_exits_with_a_reason()
    {
        var certificates = new Dictionary<string, string>(Environment) { ["ATTENTION_TLS__CERTIFICATE"] = TestCertificates.Node, ["ATTENTION_TLS__CA"] = TestCertificates.Ca };
        string closed = $"127.0.0.1:{ClusterHarness.FreePort()}";

        // Bad settings: exit 2, naming the setting or file.
        var (threads, threadsOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), certificates, "node", "--threads", "0");
        Assert.True(threads == 2 && threadsOutput.Contains("Node:Threads", StringComparison.Ordinal), $"node --threads 0 exited {threads}:\n{threadsOutput}");
        var (misspelt, misspeltOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), new Dictionary<string, string>(certificates) { ["ATTENTION_NODE__THREDS"] = "2" }, "node");
        Assert.True(misspelt == 2 && misspeltOutput.Contains("unknown setting 'Node:THREDS'", StringComparison.OrdinalIgnoreCase), $"a misspelt setting exited {misspelt}:\n{misspeltOutput}");
        string missing = Path.Combine(dir, "missing.pfx");
        var (cert, certOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), Environment, "node", "--cert", missing, "--ca", TestCertificates.Ca);
        Assert.True(cert == 2 && certOutput.Contains(missing, StringComparison.Ordinal), $"node with a missing certificate exited {cert}:\n{certOutput}");

        // A seed nobody answers at: exit 1 once the join timeout passes, naming the seed.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (join, joinOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), new Dictionary<string, string>(certificates) { ["ATTENTION_NODE__JOINTIMEOUTSECONDS"] = "4" }, "node", "--roles", "worker", "--seed", closed);
        Assert.True(join == 1 && joinOutput.Contains(closed, StringComparison.Ordinal), $"node with an unreachable seed exited {join} after {clock.Elapsed.TotalSeconds:F1} s:\n{joinOutput}");

        // A client whose cluster does not answer: exit 1 naming the endpoint; its flags without --cluster: exit 2.
        var (run, runOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), Environment, "run", "--random", "--seq", "64", "--dim", "16", "--cluster", closed, "--cert", TestCertificates.Client, "--ca", TestCertificates.Ca);
        Assert.True(run == 1 && runOutput.Contains(closed, StringComparison.Ordinal), $"run --cluster {closed} exited {run}:\n{runOutput}");
        var (listen, listenOutput) = await CommandLineTests.Attention(TimeSpan.FromMinutes(1), Environment, "run", "--random", "--seq", "64", "--dim", "16", "--listen", "0.0.0.0:0");
        Assert.True(listen == 2 && listenOutput.Contains("--listen needs --cluster", StringComparison.Ordinal), $"run --listen without --cluster exited {listen}:\n{listenOutput}");
    }
}
