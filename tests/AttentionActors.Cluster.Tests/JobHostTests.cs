using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using AttentionActors.Cluster.Coordinator;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Node;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Wire;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging.Abstractions;

namespace AttentionActors.Cluster.Tests;

/// <summary>A coordinator's job host in a one-node cluster of this test's own actor system.</summary>
public sealed class JobHostTests() : Akka.TestKit.Xunit2.TestKit(ConfigurationFactory.ParseString("""
    akka.actor.provider = cluster
    akka.remote.dot-netty.tcp { hostname = "127.0.0.1", port = 0 }
    akka.cluster.roles = [coordinator, reducer, worker]
    """).WithFallback(PipelineConfig.Base))
{
    /// <summary>Answers a card question with the card it is given, as a node's agent does.</summary>
    private sealed class Agent : ReceiveActor
    {
        public Agent(NodeCard card) => Receive<GetCard>(_ => Sender.Tell(card));
    }

    [Fact]
    public async Task A_card_asked_for_before_the_nodes_agent_exists_is_asked_for_again_so_the_node_takes_jobs()
    {
        var cluster = Akka.Cluster.Cluster.Get(Sys);
        cluster.Join(cluster.SelfAddress);
        await AwaitConditionAsync(() => Task.FromResult(cluster.SelfMember.Status == MemberStatus.Up), TimeSpan.FromSeconds(20));
        ClusterWire.Register();
        await using var data = new DataPlaneClient(ClusterCertificates.Load(TestCertificates.Node, TestCertificates.Ca), new DataPlaneOptions(), new WireCodec((ExtendedActorSystem)Sys), PeerRole.Node, PeerRole.Client);
        var options = new NodeOptions { Roles = NodeRoles.All, Threads = 1, Certificate = TestCertificates.Node, CaCertificate = TestCertificates.Ca };
        var host = Sys.ActorOf(Props.Create(() => new JobHost(options, CreateTestProbe().Ref, data, NullLogger.Instance)), NodeHost.JobsName);

        // The host has seen this node Up and asked its agent for the card: nobody answered, there was no agent yet.
        await Task.Delay(500);
        string self = cluster.SelfAddress.ToString();
        Sys.ActorOf(Props.Create(() => new Agent(new NodeCard(self, NodeRoles.All, "127.0.0.1:1", "test", 1, "Vector512", 1, 0, 0, 0, false))), NodeHost.AgentName);

        var (q, k, v) = TestData.Qkv(29, 1, 1, 1, 64, 64, 16, 16);
        var geometry = AttentionProblem.Create(q, k, v).Geometry;
        object? answer = null;
        for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5); DateTime.UtcNow < deadline; await Task.Delay(200))
        {
            var request = new SubmitJob(new JobId(Guid.NewGuid().ToString("N")[..12]), geometry, new DataRef("127.0.0.1:1", [1]), new DataRef("127.0.0.1:1", [2]), [3], 0, 0, null);
            answer = await host.Ask<object>(new Submit(request), TimeSpan.FromSeconds(5));
            if (answer is not Refusal { Reason: var reason } || !reason.Contains("node is up", StringComparison.Ordinal))
            {
                break;
            }
        }

        Assert.True(answer is JobAccepted, $"the job host answered {answer}");
    }
}
