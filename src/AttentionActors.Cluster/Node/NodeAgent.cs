using Akka.Actor;
using Akka.Cluster;
using AttentionActors.Cluster.Workers;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cluster.Node;

/// <summary>What a node is, apart from its counters: the fixed part of its <see cref="NodeCard"/>.</summary>
internal sealed record NodeIdentity(string Address, IReadOnlyList<string> Roles, string DataEndpoint, string Host, int ProcessId, string Simd, int Threads, long StartedUnixMs);

/// <summary>The node's role actors, for its agent to ask and watch (those the node does not play are null).</summary>
internal sealed record NodeRoleActors(IActorRef? Jobs, IActorRef? Queue, IActorRef? Reducer, IActorRef? Feed, ProjectionCaches? Projections, WorkerStats? Stats);

/// <summary>
/// A node's agent: its card (<see cref="GetCard"/>), its roles' job tables, draining, and the
/// operator's questions that span the cluster (status, running jobs, job tables), which it answers
/// by asking the other nodes' agents and job hosts. It watches its node's role actors: a role that
/// stops for good takes the node down (it exits non-zero for its supervisor), so no node ever
/// advertises a role it no longer plays.
/// </summary>
internal sealed partial class NodeAgent : ReceiveActor
{
    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(3);
    private readonly NodeIdentity identity;
    private readonly NodeRoleActors roles;
    private readonly TimeSpan shutdownTimeout;
    private readonly ILogger logger;
    private readonly Func<(long Read, long Written)> traffic;

    public NodeAgent(NodeIdentity identity, NodeRoleActors roles, TimeSpan shutdownTimeout, ILogger logger, Func<(long Read, long Written)>? traffic = null)
    {
        this.identity = identity;
        this.traffic = traffic ?? (() => (0, 0));
        this.roles = roles;
        this.shutdownTimeout = shutdownTimeout;
        this.logger = logger;
        Receive<GetCard>(_ => Sender.Tell(Card()));
        ReceiveAsync<JobTablesQuery>(async _ => Sender.Tell(new ClusterJobTables(await LocalTables())));
        ReceiveAsync<ClusterJobTablesQuery>(async _ =>
        {
            var tables = new List<JobTables>();
            foreach (var address in UpMembers().Select(m => m.Address))
            {
                // This agent's own tables are read here: asking itself would wait on its own suspended mailbox.
                var answer = IsSelf(address) ? new ClusterJobTables(await LocalTables()) : await AskOrNull<ClusterJobTables>(Agent(address), new JobTablesQuery());
                tables.AddRange(answer?.Tables ?? [new JobTables($"{address} (did not answer)", [])]);
            }

            Sender.Tell(new ClusterJobTables(tables));
        });
        ReceiveAsync<ClusterStatusQuery>(async _ =>
        {
            var cluster = Akka.Cluster.Cluster.Get(Context.System);
            var state = cluster.State;
            var members = new List<MemberView>();
            foreach (var member in state.Members.OrderBy(m => m.Address.ToString(), StringComparer.Ordinal))
            {
                bool reachable = !state.Unreachable.Contains(member);
                var card = IsSelf(member.Address) ? Card() : reachable ? await AskOrNull<NodeCard>(Agent(member.Address), new GetCard()) : null;
                members.Add(new MemberView(member.Address.ToString(), member.Status.ToString(), reachable, [.. member.Roles.Order()], card));
            }

            Sender.Tell(new ClusterStatus(identity.Address, members));
        });
        ReceiveAsync<DoorsQuery>(async _ =>
        {
            var doors = new List<string>();
            foreach (var member in UpMembers().Where(m => m.HasRole(NodeRoles.Coordinator)))
            {
                if ((IsSelf(member.Address) ? Card() : await AskOrNull<NodeCard>(Agent(member.Address), new GetCard())) is { } card)
                {
                    doors.Add(card.DataEndpoint);
                }
            }

            Sender.Tell(new Doors(doors, identity.DataEndpoint));
        });
        ReceiveAsync<RunningJobsQuery>(async _ =>
        {
            var jobs = new List<RunningJob>();
            foreach (var member in UpMembers().Where(m => m.HasRole(NodeRoles.Coordinator)))
            {
                var answer = await AskOrNull<RunningJobs>(Context.ActorSelection(new RootActorPath(member.Address) / "user" / NodeHost.JobsName), new RunningJobsQuery());
                jobs.AddRange(answer?.Jobs ?? []);
            }

            Sender.Tell(new RunningJobs(jobs));
        });
        ReceiveAsync<DrainNode>(async drain =>
        {
            if (drain.Address != identity.Address)
            {
                var member = UpMembers().FirstOrDefault(m => m.Address.ToString() == drain.Address);
                Sender.Tell(member is null ? new Refusal($"no member of the cluster is at {drain.Address}") : await AskOrNull<object>(Agent(member.Address), drain) ?? new Refusal($"{drain.Address} did not answer"));
                return;
            }

            if (roles.Feed is null)
            {
                Sender.Tell(new Refusal($"{identity.Address} is not a worker node: it has no shards to drain; stop it with SIGTERM to leave"));
                return;
            }

            Sender.Tell(new Ack());
            LogDraining(logger, identity.Address);
            await AskOrNull<Drained>(roles.Feed, new Drain(), shutdownTimeout);
            var cluster = Akka.Cluster.Cluster.Get(Context.System);
            cluster.Leave(cluster.SelfAddress);
        });
        Receive<Terminated>(t =>
        {
            LogRoleStopped(logger, t.ActorRef.Path.Name);
            CoordinatedShutdown.Get(Context.System).Run(RoleStopped.Instance);
        });
    }

    protected override void PreStart()
    {
        foreach (var role in new[] { roles.Jobs, roles.Queue, roles.Reducer, roles.Feed })
        {
            if (role is not null)
            {
                Context.Watch(role);
            }
        }
    }

    private NodeCard Card()
    {
        var (read, written) = traffic();
        return new(identity.Address, identity.Roles, identity.DataEndpoint, identity.Host, identity.ProcessId, identity.Simd, identity.Threads, identity.StartedUnixMs, roles.Stats?.ShardsDone ?? 0, roles.Stats?.InFlight ?? 0, roles.Stats?.Draining ?? false, read, written);
    }

    private async Task<List<JobTables>> LocalTables()
    {
        var tables = new List<JobTables>();
        foreach (var role in new[] { roles.Jobs, roles.Queue, roles.Reducer, roles.Feed })
        {
            if (role is not null && await AskOrNull<JobTables>(role, new JobTablesQuery()) is { } table)
            {
                tables.Add(table with { Role = $"{identity.Address} {table.Role}" });
            }
        }

        if (roles.Projections is { } projections)
        {
            tables.Add(new JobTables($"{identity.Address} projections", projections.Jobs));
        }

        return tables;
    }

    private static bool IsSelf(Address address) => address.Equals(Akka.Cluster.Cluster.Get(Context.System).SelfAddress);

    private static IEnumerable<Member> UpMembers()
    {
        var state = Akka.Cluster.Cluster.Get(Context.System).State;
        return state.Members.Where(m => m.Status == Akka.Cluster.MemberStatus.Up && !state.Unreachable.Contains(m));
    }

    private static ActorSelection Agent(Address address) => Context.ActorSelection(new RootActorPath(address) / "user" / NodeHost.AgentName);

    private static async Task<T?> AskOrNull<T>(ICanTell target, object message, TimeSpan? timeout = null)
        where T : class
    {
        try
        {
            return target switch
            {
                IActorRef actor => await actor.Ask<T>(message, timeout ?? AskTimeout),
                ActorSelection selection => await selection.Ask<T>(message, timeout ?? AskTimeout),
                _ => null,
            };
        }
        catch (AskTimeoutException)
        {
            return null;
        }
    }

    /// <summary>Why a node shuts down when one of its roles stops for good.</summary>
    internal sealed class RoleStopped : CoordinatedShutdown.Reason
    {
        public static readonly RoleStopped Instance = new();

        private RoleStopped()
        {
        }

        public override int ExitCode => 3;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node} draining: no more shards; leaving the cluster once its running ones are answered")]
    private static partial void LogDraining(ILogger logger, string node);

    [LoggerMessage(Level = LogLevel.Critical, Message = "role actor {Role} stopped for good; the node shuts down so no one relies on a role it no longer plays")]
    private static partial void LogRoleStopped(ILogger logger, string role);
}
