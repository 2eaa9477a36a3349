using System.Net.Sockets;
using System.Security.Cryptography;
using Akka.Actor;
using Akka.Actor.Setup;
using Akka.Configuration;
using Akka.Remote.Transport.DotNetty;
using Akka.Serialization;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Wire;

namespace AttentionActors.Cluster.Tests;

/// <summary>
/// Who may say what, tried against a running cluster: a process without the cluster's node
/// certificate can neither join, deliver a message, nor fetch a byte; a client certificate lets a
/// process run its own jobs and nothing else; and nothing malformed stops a node from serving.
/// </summary>
[Collection(MixedClusterCollection.Name)]
public sealed class SecurityTests(MixedCluster cluster)
{
    private static readonly Lazy<string> OtherCa = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("attention-other-ca-").FullName;
        CertificateAuthority.Create(dir);
        return dir;
    });

    private static ClusterCertificates Certificates(string certificate, string? ca = null) => ClusterCertificates.Load(certificate, ca ?? TestCertificates.Ca);

    /// <summary>A job that must still give single-node bits after whatever a test threw at the cluster.</summary>
    private async Task StillServes(string after)
    {
        var (q, k, v) = TestData.Qkv(61, 1, 2, 2, 300, 300, 32, 32);
        var problem = AttentionProblem.Create(q, k, v, new AttentionOptions { Causal = true });
        var client = await cluster.Harness.ClientAsync(o => o with { MaxShardBytes = 64 << 10 });
        var result = await cluster.Harness.Within(client.ComputeAsync(problem), TimeSpan.FromSeconds(60));
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, $"a job after {after}");
        Assert.All(cluster.Harness.Nodes, n => Assert.False(n.HasExited, $"{n.Name} died after {after}:\n{n.Tail()}"));
    }

    [Fact]
    public async Task A_node_with_another_CAs_certificate_cannot_join_and_the_cluster_serves_on()
    {
        var environment = new Dictionary<string, string>
        {
            ["ATTENTION_TLS__CERTIFICATE"] = Path.Combine(OtherCa.Value, CertificateAuthority.NodeFile),
            ["ATTENTION_TLS__CA"] = Path.Combine(OtherCa.Value, CertificateAuthority.CaFile),
            ["ATTENTION_NODE__JOINTIMEOUTSECONDS"] = "8",
        };
        await using var stranger = NodeProcess.Start("stranger", environment, "node", "--roles", "worker", "--seed", cluster.Harness.Seed);

        int code = await stranger.WaitForExit(TimeSpan.FromSeconds(60));

        Assert.True(code == 1, $"the stranger exited {code}:\n{stranger.Tail()}");
        Assert.Contains("did not join the cluster", stranger.Output, StringComparison.Ordinal);
        Assert.Contains("TLS handshake with a seed failed", stranger.Output, StringComparison.Ordinal);
        var status = await cluster.Harness.Operator.StatusAsync();
        Assert.Equal(4, status.Members.Count);
        await StillServes("a stranger tried to join");
    }

    [Fact]
    public async Task The_data_plane_refuses_plain_TCP_another_CA_and_broken_frames_and_serves_on()
    {
        // Plain TCP: bytes that are no TLS handshake. The connection is closed, nothing answered.
        using (var socket = new Socket(SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync("127.0.0.1", cluster.Harness.DataPort);
            await socket.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            var buffer = new byte[256];
            socket.ReceiveTimeout = 10_000;
            int got;
            try
            {
                got = socket.Receive(buffer);
            }
            catch (SocketException)
            {
                got = 0;
            }

            Assert.True(got == 0 || buffer[0] == 0x15, $"plain TCP got {got} bytes back that are not a TLS alert");
        }

        // Another CA's node certificate: the handshake fails, so no request can be made.
        ClusterWire.Register();
        await using (var stranger = new DataPlaneClient(Certificates(Path.Combine(OtherCa.Value, CertificateAuthority.NodeFile), Path.Combine(OtherCa.Value, CertificateAuthority.CaFile)), new DataPlaneOptions(), new WireCodec(null), PeerRole.Node))
        {
            var refused = await Assert.ThrowsAsync<DataPlaneException>(() => stranger.RequestAsync(cluster.Harness.Data, default, new ClusterStatusQuery(), TimeSpan.FromSeconds(10)));
            Assert.False(refused.Refused, $"another CA's certificate was answered: {refused.Message}");
        }

        // A node of the cluster sending frames that break the format, or payloads that do not decode: refused, and the node goes on.
        await using var node = new DataPlaneClient(Certificates(TestCertificates.Node), new DataPlaneOptions(), new WireCodec(null), PeerRole.Node);
        var garbage = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestRawAsync(cluster.Harness.Data, default, "WatchJobs", [0xde, 0xad, 0xbe, 0xef], TimeSpan.FromSeconds(10)));
        Assert.Contains("malformed", garbage.Message, StringComparison.Ordinal);
        var versioned = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestRawAsync(cluster.Harness.Data, default, "WatchJobs", [0x92, 0x07, 0x00], TimeSpan.FromSeconds(10)));
        Assert.Contains("wire version 7", versioned.Message, StringComparison.Ordinal);
        var unknown = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestRawAsync(cluster.Harness.Data, default, "NoSuchMessage", [0x91, 0x01], TimeSpan.FromSeconds(10)));
        Assert.Contains("unknown type 'NoSuchMessage'", unknown.Message, StringComparison.Ordinal);
        var truncated = new WireCodec(null).Encode(new WatchJobs([new JobId("nobody"), new JobId("else")]))[..^5];
        var cut = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestRawAsync(cluster.Harness.Data, default, "WatchJobs", truncated, TimeSpan.FromSeconds(10)));
        Assert.True(cut.Refused, cut.Message);
        await StillServes("garbage on the data plane");
    }

    [Fact]
    public async Task A_client_certificate_runs_its_own_jobs_and_nothing_else()
    {
        ClusterWire.Register();
        await using var client = new DataPlaneClient(Certificates(TestCertificates.Client), new DataPlaneOptions(), new WireCodec(null), PeerRole.Node);
        string data = cluster.Harness.Data;
        var partials = new PartialComputed(new JobId("someone"), 0, 1, new byte[16], new Kernels.Partials.PartialSet([], 0, 1));
        foreach (var (forbidden, what) in new (object, string)[] { (partials, "PartialComputed"), (new ClusterStatusQuery(), "ClusterStatusQuery"), (new DrainNode("anything"), "DrainNode"), (new ClusterJobTablesQuery(), "ClusterJobTablesQuery") })
        {
            var refused = await Assert.ThrowsAsync<DataPlaneException>(() => client.RequestAsync(data, default, forbidden, TimeSpan.FromSeconds(10)));
            Assert.True(refused.Refused, refused.Message);
            Assert.Contains($"a client may not send {what}", refused.Message, StringComparison.Ordinal);
        }

        // Another client's running job cannot be cancelled without its owner key.
        var owner = await cluster.Harness.ClientAsync(o => o with { MaxShardBytes = 1 << 20 });
        var (q, k, v) = TestData.Qkv(62, 1, 8, 8, 4096, 4096, 64, 64);
        var problem = AttentionProblem.Create(q, k, v);
        var job = owner.ComputeAsync(problem);
        var running = await RunningJob(job);
        var denied = await Assert.ThrowsAsync<DataPlaneException>(() => client.RequestAsync(data, RandomNumberGenerator.GetBytes(32), new CancelJob(running, "not mine"), TimeSpan.FromSeconds(10)));
        Assert.Contains("belongs to another client", denied.Message, StringComparison.Ordinal);
        var result = await cluster.Harness.Within(job, TimeSpan.FromSeconds(120));
        TestData.AssertBitwise(ClusterHarness.SingleNode(problem).Output.Data.Span, result.Output.Data.Span, "the job another client tried to cancel");
    }

    [Fact]
    public async Task A_clients_inbox_and_store_open_only_to_nodes_with_the_jobs_keys()
    {
        var target = await cluster.Harness.ClientAsync();
        await using var node = new DataPlaneClient(Certificates(TestCertificates.Node), new DataPlaneOptions(), new WireCodec(null), PeerRole.Client);
        await using var otherClient = new DataPlaneClient(Certificates(TestCertificates.Client), new DataPlaneOptions(), new WireCodec(null), PeerRole.Client);
        var job = new JobId("forged");
        var rows = new RowsFinished(job, 0, 0, 0, 1, [1f], [0f]);

        // A node presenting no job's key: no inbox opens; no store answers.
        var inbox = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestAsync(target.Endpoint, RandomNumberGenerator.GetBytes(32), rows, TimeSpan.FromSeconds(10)));
        Assert.Contains("no inbox of job forged", inbox.Message, StringComparison.Ordinal);
        var fetch = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestAsync(target.Endpoint, RandomNumberGenerator.GetBytes(32), new FetchShard(job, new Pipeline.Planning.Shard(0, 0, 0, 0, 1, 0, 1, 1, 1, 1)), TimeSpan.FromSeconds(10)));
        Assert.Contains("no job forged with this store key", fetch.Message, StringComparison.Ordinal);
        var completed = await Assert.ThrowsAsync<DataPlaneException>(() => node.RequestAsync(target.Endpoint, RandomNumberGenerator.GetBytes(32), new AttentionCompleted(job, 1), TimeSpan.FromSeconds(10)));
        Assert.True(completed.Refused, completed.Message);

        // Another client is no node: it may not deliver or fetch at all.
        var notNode = await Assert.ThrowsAsync<DataPlaneException>(() => otherClient.RequestAsync(target.Endpoint, default, rows, TimeSpan.FromSeconds(10)));
        Assert.Contains("only nodes of the cluster", notNode.Message, StringComparison.Ordinal);
        await StillServes("forged deliveries to a client");
    }

    [Fact]
    public async Task Akka_messages_that_do_not_decode_are_dropped_a_client_certificate_cannot_associate_and_the_node_serves_on()
    {
        var seedReducer = $"akka.ssl.tcp://attention@{cluster.Harness.Seed}/user/{Node.NodeHost.ReducerName}";
        var seedAgent = $"akka.ssl.tcp://attention@{cluster.Harness.Seed}/user/{Node.NodeHost.AgentName}";

        // With the node certificate a process may talk to the nodes (it is one); its garbage is refused at decode and dropped.
        using (var rogue = Rogue(TestCertificates.Node))
        {
            // (The rogue reads every answer with its garbage serializer, so the card comes back as raw bytes: an answer came.)
            var card = await rogue.ActorSelection(seedAgent).Ask<Garbage>(new GetCard(), TimeSpan.FromSeconds(20));
            Assert.Equal("NodeCard", WireCodec.ManifestOf(new WireCodec(null).Decode("NodeCard", card.Payload)));
            foreach (var payload in new byte[][] { [0xde, 0xad], [0x92, 0x07, 0x00], [0x9a, 0x01] })
            {
                rogue.ActorSelection(seedReducer).Tell(new Garbage(payload));
            }

            await cluster.Harness.Eventually(() => Task.FromResult(cluster.Harness.Nodes[0].Output.Split('\n').Count(l => l.Contains("Manifest=ExpectShards", StringComparison.Ordinal) && l.Contains("WireFormatException", StringComparison.Ordinal) && l.Contains(" warn ", StringComparison.Ordinal)) >= 3), TimeSpan.FromSeconds(20), "the seed warning of the three undecodable messages");
        }

        // With a client certificate the TLS handshake fails: no message is delivered, no answer comes.
        using (var client = Rogue(TestCertificates.Client))
        {
            await Assert.ThrowsAsync<AskTimeoutException>(() => client.ActorSelection(seedAgent).Ask<object>(new GetCard(), TimeSpan.FromSeconds(5)));
        }

        await StillServes("undecodable Akka messages and a client knocking at the cluster port");
    }

    /// <summary>A job id, once <paramref name="job"/> runs on the cluster (from the operator's list).</summary>
    private async Task<JobId> RunningJob(Task job)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline && !job.IsCompleted)
        {
            var jobs = await cluster.Harness.Operator.JobsAsync();
            if (jobs.Jobs.Count > 0)
            {
                return jobs.Jobs[0].Job;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException("the job never showed in the running jobs");
    }

    /// <summary>An actor system that is no node: remoting with TLS and <paramref name="certificate"/>, and a serializer that writes garbage under the wire serializer's id.</summary>
    private static ActorSystem Rogue(string certificate)
    {
        var certificates = Certificates(certificate);
        var config = ConfigurationFactory.ParseString($$"""
            akka {
              loglevel = ERROR
              stdout-loglevel = OFF
              actor.provider = remote
              remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0, enable-ssl = true }
              actor.serializers.garbage = "{{typeof(GarbageSerializer).AssemblyQualifiedName}}"
              actor.serialization-bindings { "{{typeof(Garbage).AssemblyQualifiedName}}" = garbage }
            }
            """).WithFallback(PipelineConfig.Base);
        var tls = new DotNettySslSetup(certificates.Own, false, true, (c, _, _, _, _) => certificates.Check(c, out _) is not null);
        return ActorSystem.Create("attention", ActorSystemSetup.Create(BootstrapSetup.Create().WithConfig(config), tls));
    }

    /// <summary>Bytes that claim to be a wire message.</summary>
    public sealed record Garbage(byte[] Payload);

    /// <summary>Writes a <see cref="Garbage"/>'s bytes as an ExpectShards message under the wire serializer's id: what a broken or hostile node would send.</summary>
    public sealed class GarbageSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
    {
        public override int Identifier => WireSerializer.Id;

        public override string Manifest(object o) => "ExpectShards";

        public override byte[] ToBinary(object obj) => ((Garbage)obj).Payload;

        public override object FromBinary(byte[] bytes, string manifest) => new Garbage(bytes);
    }
}
