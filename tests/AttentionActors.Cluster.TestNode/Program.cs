using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using AttentionActors.Cluster.Node;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

// A cluster node for the tests, with faults a product node never has: a worker that flips one bit
// of every partial (for audits to catch), or that kills its own process on a shard whose Q holds a
// value (a shard that kills every worker it lands on). Otherwise the same ClusterNode as `attention node`.
//   TestNode --roles worker --seed host:port --cert F --ca F [--threads N] [--port P] [--data-port D]
//            [--stable-after S] [--shard-timeout S] [--fault flip-bit | exit-on-value=X]
var flags = new Dictionary<string, string>(StringComparer.Ordinal);
for (int i = 0; i + 1 < args.Length; i += 2)
{
    flags[args[i]] = args[i + 1];
}

string Flag(string name, string fallback) => flags.TryGetValue(name, out string? value) ? value : fallback;
double Seconds(string name, double fallback) => double.Parse(Flag(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

var options = new NodeOptions
{
    Roles = Flag("--roles", "worker").Split(','),
    Seeds = flags.TryGetValue("--seed", out string? seed) ? [seed] : [],
    Certificate = Flag("--cert", ""),
    CaCertificate = Flag("--ca", ""),
    Threads = int.Parse(Flag("--threads", "1"), CultureInfo.InvariantCulture),
    Port = int.Parse(Flag("--port", "0"), CultureInfo.InvariantCulture),
    DataPort = int.Parse(Flag("--data-port", "0"), CultureInfo.InvariantCulture),
    StableAfter = TimeSpan.FromSeconds(Seconds("--stable-after", 5)),
    Job = new AttentionActors.Pipeline.Coordinator.JobOptions { ShardTimeout = TimeSpan.FromSeconds(Seconds("--shard-timeout", 30)) },
};
string? fault = flags.GetValueOrDefault("--fault");
using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(c => c.SingleLine = true).SetMinimumLevel(LogLevel.Information));
var logger = loggers.CreateLogger("TestNode");

WorkerServices Faulty(WorkerServices services)
{
    if (fault == "flip-bit")
    {
        var compute = services.Compute;
        return services with
        {
            Compute = (input, shard, attempt, ct) =>
            {
                // A machine that returns plausible wrong numbers: the lowest bit of the first o that counts.
                var partials = compute(input, shard, attempt, ct);
                int first = Array.FindIndex(partials.M, float.IsFinite);
                if (first >= 0)
                {
                    ref float o = ref partials.O[first * partials.ValueDim];
                    o = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(o) ^ 1);
                }

                return partials;
            },
        };
    }

    if (fault?.StartsWith("exit-on-value=", StringComparison.Ordinal) == true)
    {
        float poison = float.Parse(fault["exit-on-value=".Length..], CultureInfo.InvariantCulture);
        var compute = services.Compute;
        return services with
        {
            Compute = (input, shard, attempt, ct) =>
            {
                if (input.Q.Span.Contains(poison))
                {
                    logger.LogCritical("injected fault: shard {Shard} holds {Value}; killing this worker process", shard.Id, poison);
                    Process.GetCurrentProcess().Kill();
                }

                return compute(input, shard, attempt, ct);
            },
        };
    }

    return services;
}

await using var node = await ClusterNode.StartAsync(options, loggers, Faulty);
using var stop = new CancellationTokenSource();
using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
var terminated = node.Terminated;
await Task.WhenAny(terminated, Task.Delay(Timeout.Infinite, stop.Token).ContinueWith(_ => false, TaskScheduler.Default));
if (terminated.IsCompleted && !terminated.Result)
{
    logger.LogError("node {Node} was taken down by the cluster; exiting with code 3", node.Address);
    return 3;
}

await node.StopAsync();
return 0;
