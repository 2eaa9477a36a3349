using System.Diagnostics;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Transport;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;

namespace AttentionActors.Cluster.Tests;

/// <summary>amqps:// against a broker whose certificate comes from a CA made by openssl for this test.</summary>
[Collection(BrokerCollection.Name)]
public sealed class TlsTests
{
    [Fact]
    public async Task Nodes_and_clients_speak_amqps_trusting_only_the_given_CA()
    {
        string dir = Directory.CreateTempSubdirectory("attention-tls-").FullName;
        try
        {
            await MakeCertificates(dir);
            await using var broker = await LocalBroker.StartAsync((Path.Combine(dir, "ca.pem"), Path.Combine(dir, "server.pem"), Path.Combine(dir, "server.key")));
            var options = new BrokerOptions
            {
                Url = broker.TlsUrl,
                CaFile = Path.Combine(dir, "ca.pem"),
                Prefix = PrivateBroker.NewPrefix(),
                HeartbeatInterval = TimeSpan.FromMilliseconds(250),
                NodeTimeout = TimeSpan.FromSeconds(2),
                ConnectTimeout = TimeSpan.FromSeconds(3),
            };

            // The machine's trust store does not know this CA: no connection without --ca-file.
            var refused = await Assert.ThrowsAsync<BrokerUnreachableException>(() => ClusterClient.ConnectAsync(options with { CaFile = null }));
            Assert.Contains("amqps://attention-local:***@localhost", refused.Message, StringComparison.Ordinal);

            await using var node = NodeProcess.StartNode(options, "tls-node", "coordinator,worker,reducer", threads: 2, extra: ["--ca-file", options.CaFile]);
            await using var client = await ClusterClient.ConnectAsync(options);
            Assert.True(await client.WaitForRoleAsync(NodeRoles.Worker, TimeSpan.FromSeconds(30)), $"the node did not join over TLS:\n{node.Tail()}");
            var (q, k, v) = TestData.Qkv(41, 1, 2, 2, 300, 300, 32, 32);
            var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true });

            var result = await client.ComputeAsync(problem, maxShardBytes: 64 << 10).WaitAsync(TimeSpan.FromSeconds(60));

            TestData.AssertBitwise(Attention.Compute(problem).Output.Data.Span, result.Output.Data.Span, "output over amqps");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task MakeCertificates(string dir)
    {
        await File.WriteAllTextAsync(Path.Combine(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
        string[][] steps =
        [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=attention-test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"],
        ];
        foreach (var step in steps)
        {
            var start = new ProcessStartInfo("openssl") { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in step)
            {
                start.ArgumentList.Add(arg);
            }

            using var openssl = Process.Start(start)!;
            string errors = await openssl.StandardError.ReadToEndAsync();
            await openssl.WaitForExitAsync();
            Assert.True(openssl.ExitCode == 0, $"openssl {string.Join(' ', step)} failed: {errors}");
        }
    }
}
