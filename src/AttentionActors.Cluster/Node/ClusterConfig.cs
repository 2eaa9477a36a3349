using System.Globalization;
using Akka.Configuration;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Pipeline;

namespace AttentionActors.Cluster.Node;

/// <summary>
/// The actor system settings of a cluster node, over the pipeline's own (<see cref="PipelineConfig.Base"/>):
/// Akka.Cluster with the node's roles and seeds, Akka.Remote over TLS (the certificates are given in
/// code, so every node checks its peers against the cluster's CA), and the downing strategy. The
/// split-brain resolver keeps the side holding the majority of the coordinator nodes once membership
/// has been stable for stable-after (5 s by default) and downs the other side; with equal halves the
/// side with the lowest-addressed coordinator stays. Coordinators hold the jobs; workers and reducers
/// are counted out because they are the nodes that fail in bursts (a shard that kills each worker it
/// lands on, a machine of workers lost): counted in, two workers lost at once would leave a lone
/// coordinator in the minority, downing it and every job. A side left without its coordinators downs
/// itself, so its workers exit and, restarted, join the seeds again instead of idling headless.
/// It never downs everything for being unstable: a burst of losses changes membership faster than
/// stable-after, and must cost those nodes, not the cluster. For the same reason coordinators down
/// a lost worker or reducer themselves after half of stable-after (<see cref="Coordinator.JobHost"/>):
/// the resolver takes nodes that died having seen another die for indirectly connected, and downs all.
/// </summary>
public static class ClusterConfig
{
    /// <summary>Name of every node's actor system: nodes of one cluster must share it.</summary>
    public const string SystemName = "attention";

    /// <summary>
    /// Largest message on the cluster's own connections. Bulk data never rides them (the data plane
    /// carries it); the largest control message is a job's plan for its reducer (a few MiB for the
    /// biggest plans). Every node must use the same value: a message over the receiver's limit closes
    /// the association.
    /// </summary>
    public const int MaxFrameBytes = 16 << 20;

    /// <summary>The settings of a node with <paramref name="options"/>.</summary>
    public static Config For(NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        string self = Address(options.AdvertisedHost, options.Port);
        var seeds = options.Seeds.Count > 0 ? options.Seeds.Select(s => Address(s)).ToList() : [self];
        string roles = string.Join(", ", options.Roles.Select(r => $"\"{r}\""));
        string hocon = string.Create(CultureInfo.InvariantCulture, $$"""
            akka {
              actor.provider = cluster
              remote {
                log-remote-lifecycle-events = off
                # A node started before its seed listens retries within a second, not five.
                retry-gate-closed-for = 1s
                dot-netty.tcp {
                  hostname = "{{options.Bind}}"
                  public-hostname = "{{options.AdvertisedHost}}"
                  port = {{options.Port}}
                  enable-ssl = true
                  maximum-frame-size = {{MaxFrameBytes}}b
                  send-buffer-size = {{2 * MaxFrameBytes}}b
                  receive-buffer-size = {{2 * MaxFrameBytes}}b
                }
              }
              cluster {
                roles = [{{roles}}]
                seed-nodes = [{{string.Join(", ", seeds.Select(s => $"\"{s}\""))}}]
                log-info = off
                # A join request unanswered (the first over a new association is sometimes lost) is sent again after 2 s, not 5.
                seed-node-timeout = 2s
                retry-unsuccessful-join-after = 2s
                # Joining members are moved to Up on the leader's tick: a cluster forms in about a second less than with Akka's 1 s.
                periodic-tasks-initial-delay = 200ms
                gossip-interval = 300ms
                leader-actions-interval = 300ms
                run-coordinated-shutdown-when-down = on
                downing-provider-class = "Akka.Cluster.SBR.SplitBrainResolverProvider, Akka.Cluster"
                split-brain-resolver {
                  active-strategy = keep-majority
                  keep-majority.role = "{{NodeRoles.Coordinator}}"
                  stable-after = {{(int)options.StableAfter.TotalMilliseconds}}ms
                  down-all-when-unstable = off
                }
              }
              coordinated-shutdown {
                exit-clr = off
                run-by-clr-shutdown-hook = off
              }
            }
            """);
        return ConfigurationFactory.ParseString(hocon).WithFallback(PipelineConfig.Base);
    }

    /// <summary>The cluster address of a node at <paramref name="hostPort"/> (TLS is always on, so the scheme is akka.ssl.tcp).</summary>
    public static string Address(string hostPort)
    {
        var (host, port) = DataEndpoint.Parse(hostPort);
        return Address(host, port);
    }

    public static string Address(string host, int port) => $"akka.ssl.tcp://{SystemName}@{DataEndpoint.Format(host, port)}";
}
