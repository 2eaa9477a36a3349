using Akka.Actor;
using Akka.Cluster;
using AttentionActors.Cluster.DataPlane;
using AttentionActors.Cluster.Node;
using AttentionActors.Cluster.Workers;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cluster.Coordinator;

/// <summary>A door's request to its node's job host: run this job (its owner presented <see cref="SubmitJob.OwnerKey"/>).</summary>
internal sealed record Submit(SubmitJob Request) : INoSerializationVerificationNeeded;

/// <summary>A door's request: cancel a job; <paramref name="OwnerKey"/> is what the requester presented (none for an operator).</summary>
internal sealed record CancelRequest(JobId Job, string Reason, byte[]? OwnerKey) : INoSerializationVerificationNeeded;

/// <summary>
/// A coordinator node's jobs: it takes a client's job (<see cref="Submit"/>), refuses at once what it
/// cannot run — no worker or reducer up, a plan over the limits, more partials than it may admit —
/// plans it off its mailbox for the worker threads up now, picks a live reducer, and starts a
/// <see cref="JobCoordinator"/> whose client is a link to the client's inbox. It follows membership:
/// a node gone unreachable is reported to the queue and to every running job at once (their
/// attempts there are re-issued, a job whose reducer it was fails as node-lost so its client
/// resubmits). A job whose client stops asking after it (<see cref="WatchJobs"/>) for
/// <see cref="NodeOptions.ClientTimeout"/> is cancelled; a job leaves this table when its coordinator stops.
/// </summary>
internal sealed partial class JobHost : ReceiveActor, IWithTimers
{
    private readonly NodeOptions options;
    private readonly IActorRef queue;
    private readonly DataPlaneClient data;
    private readonly ILogger logger;
    private readonly Dictionary<Address, Member> members = [];
    private readonly Dictionary<Address, NodeCard> cards = [];
    private readonly HashSet<Address> unreachable = [];
    private readonly Dictionary<JobId, JobRecord> jobs = [];
    private long admitted;
    private int nextReducer;
    private int cardChecks;

    public JobHost(NodeOptions options, IActorRef queue, DataPlaneClient data, ILogger logger)
    {
        this.options = options;
        this.queue = queue;
        this.data = data;
        this.logger = logger;
        Receive<ClusterEvent.MemberUp>(up => Joined(up.Member));
        Receive<ClusterEvent.MemberWeaklyUp>(up => Joined(up.Member));
        Receive<ClusterEvent.MemberLeft>(left => members[left.Member.Address] = left.Member);
        Receive<ClusterEvent.MemberExited>(exited => members[exited.Member.Address] = exited.Member);
        Receive<ClusterEvent.MemberRemoved>(removed =>
        {
            members.Remove(removed.Member.Address);
            cards.Remove(removed.Member.Address);
            Lost(removed.Member.Address);
            unreachable.Remove(removed.Member.Address);
        });
        Receive<ClusterEvent.UnreachableMember>(u =>
        {
            unreachable.Add(u.Member.Address);
            Lost(u.Member.Address);
            if (!u.Member.HasRole(NodeRoles.Coordinator))
            {
                Timers.StartSingleTimer(("down", u.Member.UniqueAddress), new DownCheck(u.Member), options.StableAfter / 2);
            }
        });
        Receive<DownCheck>(check => DownIfStillLost(check.Member));
        Receive<ClusterEvent.ReachableMember>(r =>
        {
            unreachable.Remove(r.Member.Address);
            queue.Tell(new NodeReachable(r.Member.Address));
        });
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        // A card asked for before the member's agent existed (this node's own, at start) or lost on the way is asked
        // for again each second; every card is refreshed every five, so a draining node stops being planned for.
        Receive<CardCheck>(_ =>
        {
            bool all = ++cardChecks % 5 == 0;
            foreach (var address in members.Keys.Where(a => all || !cards.ContainsKey(a)))
            {
                AskCard(address);
            }
        });
        Receive<NodeCard>(card =>
        {
            // Keyed by the address the card states: a local agent answers from a local path.
            if (Akka.Actor.Address.TryParse(card.Address, out var address) && members.ContainsKey(address))
            {
                cards[address] = card;
            }
        });
        Receive<Submit>(OnSubmit);
        Receive<Planned>(OnPlanned);
        Receive<WatchJobs>(watch =>
        {
            var now = Context.System.Scheduler.Now;
            var alive = watch.Jobs.Where(jobs.ContainsKey).ToList();
            alive.ForEach(job => jobs[job].LastWatched = now);
            Sender.Tell(new JobsAlive(alive));
        });
        Receive<CancelRequest>(cancel =>
        {
            if (!jobs.TryGetValue(cancel.Job, out var record))
            {
                Sender.Tell(new Refusal($"this coordinator runs no job {cancel.Job}"));
                return;
            }

            if (cancel.OwnerKey is { } key && !System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(key, record.OwnerKey))
            {
                Sender.Tell(new Refusal($"job {cancel.Job} belongs to another client"));
                return;
            }

            record.Coordinator.Tell(new CancelJob(cancel.Job, cancel.Reason), Self);
            Sender.Tell(new Ack());
        });
        Receive<ClientUnreachable>(lost =>
        {
            if (jobs.TryGetValue(lost.Job, out var record))
            {
                record.Coordinator.Tell(new CancelJob(lost.Job, lost.Reason), Self);
            }
        });
        Receive<Terminated>(t =>
        {
            foreach (var record in jobs.Values.Where(r => r.Coordinator.Equals(t.ActorRef)).ToList())
            {
                jobs.Remove(record.Job);
                admitted -= record.AdmittedBytes;
                record.Link.Tell(PoisonPill.Instance);
                LogEnded(logger, record.Job, jobs.Count);
            }
        });
        Receive<ClientCheck>(_ =>
        {
            var now = Context.System.Scheduler.Now;
            foreach (var record in jobs.Values.Where(r => now - r.LastWatched > options.ClientTimeout))
            {
                record.LastWatched = now;
                record.Coordinator.Tell(new CancelJob(record.Job, $"its client stopped asking after it for {options.ClientTimeout.TotalSeconds:F0} s (the client vanished)"), Self);
            }
        });
        ReceiveAsync<RunningJobsQuery>(async _ =>
        {
            var reports = new List<RunningJob>();
            foreach (var record in jobs.Values.ToList())
            {
                JobStatusReport? status = null;
                try
                {
                    status = await record.Coordinator.Ask<JobStatusReport>(new JobStatusQuery(), TimeSpan.FromSeconds(2));
                }
                catch (AskTimeoutException)
                {
                    // A job that ends while asked is still listed, without its progress.
                }

                reports.Add(new RunningJob(record.Job, Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString(), record.ReducerAddress.ToString(), status?.ShardsDone ?? 0, status?.ShardsTotal ?? record.Shards, (Context.System.Scheduler.Now - record.Started).TotalSeconds, status?.Workers ?? []));
            }

            Sender.Tell(new RunningJobs(reports));
        });
        Receive<JobTablesQuery>(_ => Sender.Tell(new JobTables("coordinator", [.. jobs.Keys])));
    }

    public ITimerScheduler Timers { get; set; } = null!;

    private sealed record ClientCheck : INoSerializationVerificationNeeded;

    private sealed record CardCheck : INoSerializationVerificationNeeded;

    private sealed record DownCheck(Member Member) : INoSerializationVerificationNeeded;

    private sealed record Planned(Submit Submit, IActorRef ReplyTo, ShardPlan? Plan, int Workers, Address Reducer, string? Problem, IReadOnlyList<string>? Homes = null) : INoSerializationVerificationNeeded;

    private sealed class JobRecord(JobId job, IActorRef coordinator, IActorRef link, byte[] ownerKey, long admittedBytes, Address reducerAddress, int shards, DateTimeOffset started)
    {
        public JobId Job { get; } = job;

        public IActorRef Coordinator { get; } = coordinator;

        public IActorRef Link { get; } = link;

        public byte[] OwnerKey { get; } = ownerKey;

        public long AdmittedBytes { get; } = admittedBytes;

        public Address ReducerAddress { get; } = reducerAddress;

        public int Shards { get; } = shards;

        public DateTimeOffset Started { get; } = started;

        public DateTimeOffset LastWatched { get; set; } = started;
    }

    protected override void PreStart()
    {
        Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        Timers.StartPeriodicTimer("clients", new ClientCheck(), TimeSpan.FromSeconds(1));
        Timers.StartPeriodicTimer("cards", new CardCheck(), TimeSpan.FromSeconds(1));
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    private void Joined(Member member)
    {
        members[member.Address] = member;
        AskCard(member.Address);
    }

    private static void AskCard(Address address) => Context.ActorSelection(new RootActorPath(address) / "user" / NodeHost.AgentName).Tell(new GetCard());

    /// <summary>
    /// Downs a worker or reducer node still unreachable half a stable-after after it was lost, when
    /// this coordinator sees most coordinators: such a node holds no job state a coordinator needs
    /// (its shards were re-issued when it was lost). Left to the split-brain resolver, nodes that die
    /// one after another within stable-after, each having seen the one before it die, look
    /// indirectly connected to it, and it downs every node, coordinators included; downed here one
    /// by one, they leave membership before their losses pile up.
    /// </summary>
    private void DownIfStillLost(Member member)
    {
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        var state = cluster.State;
        if (!state.Unreachable.Any(m => m.UniqueAddress.Equals(member.UniqueAddress)))
        {
            return;
        }

        var coordinators = state.Members.Where(m => m.HasRole(NodeRoles.Coordinator) && m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.WeaklyUp).ToList();
        int reachable = coordinators.Count(m => !state.Unreachable.Contains(m));
        if (2 * reachable <= coordinators.Count)
        {
            return;
        }

        LogDowning(logger, member.Address, options.StableAfter.TotalSeconds / 2);
        cluster.Down(member.Address);
    }

    /// <summary>A node stopped answering (or left): the queue skips it and every job re-issues what ran there.</summary>
    private void Lost(Address address)
    {
        var lost = new NodeUnreachable(address);
        queue.Tell(lost);
        foreach (var record in jobs.Values)
        {
            record.Coordinator.Tell(lost, Self);
        }
    }

    /// <summary>Members with <paramref name="role"/> that are up, reachable, and have told their card.</summary>
    private List<(Address Address, NodeCard Card)> Live(string role)
        => [.. members.Values
            .Where(m => m.Status == MemberStatus.Up && m.HasRole(role) && !unreachable.Contains(m.Address) && cards.ContainsKey(m.Address))
            .OrderBy(m => m.Address.ToString(), StringComparer.Ordinal)
            .Select(m => (m.Address, cards[m.Address]))];

    private void OnSubmit(Submit submit)
    {
        var request = submit.Request;
        if (jobs.ContainsKey(request.Job))
        {
            Sender.Tell(new Refusal($"job {request.Job} already runs here"));
            return;
        }

        var workers = Live(NodeRoles.Worker).Where(w => !w.Card.Draining).ToList();
        var reducers = Live(NodeRoles.Reducer);
        if (workers.Count == 0 || reducers.Count == 0)
        {
            Sender.Tell(new Refusal($"no {(workers.Count == 0 ? "worker" : "reducer")} node is up in the cluster of {Akka.Cluster.Cluster.Get(Context.System).SelfAddress} ({members.Count} members)"));
            return;
        }

        var reducer = reducers[nextReducer++ % reducers.Count].Address;
        int threads = workers.Sum(w => w.Card.Threads);
        long maxShardBytes = Math.Min(request.MaxShardBytes > 0 ? request.MaxShardBytes : options.MaxShardBytes, new DataPlaneOptions().MaxFrameBytes - (1 << 20));
        var planOptions = new PlanOptions { MaxShardBytes = maxShardBytes, MaxShards = options.MaxShards, KeysFromStore = BlockStore.Splits(request.Geometry) };
        var replyTo = Sender;
        var self = Self;

        // A large plan takes seconds: it is made off the mailbox, which goes on serving.
        Task.Run(() =>
        {
            try
            {
                var plan = JobPlanner.Plan(request.Geometry, threads, planOptions);
                var homes = Locality.Homes(request.Geometry, plan, [.. workers.Select(w => w.Card.Threads)]).Select(i => workers[i].Address.ToString()).ToList();
                return new Planned(submit, replyTo, plan, threads, reducer, null, homes);
            }
            catch (Exception ex) when (ex is AttentionInputException or ArgumentException)
            {
                return new Planned(submit, replyTo, null, threads, reducer, ex.Message);
            }
        }).PipeTo(self);
    }

    private void OnPlanned(Planned planned)
    {
        var request = planned.Submit.Request;
        if (planned.Plan is not { } plan)
        {
            Refuse(planned.ReplyTo, request.Job, planned.Problem!);
            return;
        }

        long bytes = plan.Shards.Sum(s => JobPlanner.ResultBytes(request.Geometry, s));
        if (admitted + bytes > options.MaxAdmittedBytes)
        {
            Refuse(planned.ReplyTo, request.Job, $"this coordinator's running jobs hold up to {Sizes.Format(admitted)} of partials on their reducers and this job adds {Sizes.Format(bytes)}, over its {Sizes.Format(options.MaxAdmittedBytes)} limit; try again when a job ends, or split the job");
            return;
        }

        if (!cards.TryGetValue(planned.Reducer, out var reducerCard) || unreachable.Contains(planned.Reducer))
        {
            Refuse(planned.ReplyTo, request.Job, $"its reducer {planned.Reducer} was lost while the job was planned");
            return;
        }

        var job = request.Job;
        var link = Context.ActorOf(ClientLink.Props(job, request.Inbox, data), $"client-{job}");
        var reducer = ((ExtendedActorSystem)Context.System).Provider.ResolveActorRef(new RootActorPath(planned.Reducer) / "user" / NodeHost.ReducerName);
        var setup = new JobSetup(job, request.Geometry, plan, queue, reducer, link, options.Job)
        {
            Store = request.Store,
            ResultsTo = reducerCard.DataEndpoint,
            ClientInbox = request.Inbox,
            Audit = request.Audit,
            MaskBlocks = request.MaskBlocks is { } bits ? MaskBlocks.FromBits(request.Geometry, bits) : null,
            Homes = planned.Homes,
        };
        var coordinator = Context.ActorOf(Props.Create(() => new JobCoordinator(setup, logger)), $"job-{job}");
        Context.Watch(coordinator);
        admitted += bytes;
        jobs[job] = new JobRecord(job, coordinator, link, request.OwnerKey, bytes, planned.Reducer, plan.Shards.Count, Context.System.Scheduler.Now);
        LogStarted(logger, job, plan.Shards.Count, planned.Workers, planned.Reducer);
        planned.ReplyTo.Tell(new JobAccepted(job, plan.Shards.Count, planned.Workers, Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString(), planned.Reducer.ToString()));
    }

    private void Refuse(IActorRef replyTo, JobId job, string reason)
    {
        LogRefused(logger, job, reason);
        replyTo.Tell(new Refusal(reason));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "job {Job} started: {Shards} shards for {Workers} worker threads, reducer {Reducer}")]
    private static partial void LogStarted(ILogger logger, JobId job, int shards, int workers, Address reducer);

    [LoggerMessage(Level = LogLevel.Warning, Message = "downing {Node}: unreachable for {Seconds} s (its shards were re-issued when it was lost); its process exits and may be restarted to join again")]
    private static partial void LogDowning(ILogger logger, Address node, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "job {Job} refused: {Reason}")]
    private static partial void LogRefused(ILogger logger, JobId job, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "job {Job} ended; {Running} still running here")]
    private static partial void LogEnded(ILogger logger, JobId job, int running);
}
