using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Wire;
using AttentionActors.Pipeline.Workers;
using MessagePack;

namespace AttentionActors.Cluster;

/// <summary>The answer to a request that needs no other: it was taken.</summary>
public sealed record Ack : IWireMessage;

/// <summary>The answer to a request that is refused, with the reason the requester is told.</summary>
public sealed record Refusal(string Reason) : IWireMessage;

/// <summary>A worker's request to a job's tensor store (the frame presents the store key): the data of <paramref name="Shard"/>.</summary>
public sealed record FetchShard(JobId Job, Shard Shard) : IWireMessage;

/// <summary>A request for <paramref name="Bytes"/> bytes of data, answered by nodes: the data plane's own benchmark.</summary>
public sealed record ProbeData(int Bytes) : IWireMessage;

/// <summary>
/// A client's request to a coordinator node: plan and run this job. Workers fetch its data from
/// <paramref name="Store"/>; rows, progress and the result go to <paramref name="Inbox"/>; only a
/// request presenting <paramref name="OwnerKey"/> may cancel it (or an operator). <paramref name="MaxShardBytes"/>
/// 0 takes the coordinator's default; <paramref name="Audit"/> is the fraction of shards computed again on another node.
/// </summary>
/// <paramref name="MaskBlocks"/>: with an explicit mask, which blocks each row may attend (the client holds the mask and
/// computes it; it only checks the client's own job's partials).
public sealed record SubmitJob(JobId Job, AttentionGeometry Geometry, DataRef Store, DataRef Inbox, byte[] OwnerKey, long MaxShardBytes, double Audit, byte[]? MaskBlocks) : IWireMessage;

/// <summary>A question to a node's agent: its card.</summary>
public sealed record GetCard : IWireMessage;

/// <summary>A coordinator's answer to <see cref="SubmitJob"/>: the job runs, as <paramref name="Shards"/> shards for <paramref name="Workers"/> worker threads.</summary>
public sealed record JobAccepted(JobId Job, int Shards, int Workers, string Coordinator, string Reducer) : IWireMessage;

/// <summary>A client's heartbeat to its coordinator node: these jobs are still wanted. The answer lists those still running there.</summary>
public sealed record WatchJobs(IReadOnlyList<JobId> Jobs) : IWireMessage;

/// <summary>The answer to <see cref="WatchJobs"/>: the jobs the coordinator node still runs.</summary>
public sealed record JobsAlive(IReadOnlyList<JobId> Jobs) : IWireMessage;

/// <summary>A client's (or operator's) question to any node: the data endpoints of the coordinator nodes up now, where jobs may be submitted.</summary>
public sealed record DoorsQuery : IWireMessage;

/// <summary>
/// The answer to <see cref="DoorsQuery"/>: the coordinators' data endpoints as they advertise them, and
/// the answering node's own (<paramref name="Self"/>; the asker reached it at an address it knows,
/// which may differ: a port published from a container).
/// </summary>
public sealed record Doors(IReadOnlyList<string> Endpoints, string Self) : IWireMessage;

/// <summary>An operator's question to any node: the cluster's members and each one's state.</summary>
public sealed record ClusterStatusQuery : IWireMessage;

/// <summary>
/// What a node says about itself: its cluster address, roles, data endpoint, host and process,
/// SIMD width and worker threads, when it started, and its counters.
/// </summary>
public sealed record NodeCard(string Address, IReadOnlyList<string> Roles, string DataEndpoint, string Host, int ProcessId, string Simd, int Threads, long StartedUnixMs, long ShardsDone, int InFlight, bool Draining, long BytesIn = 0, long BytesOut = 0) : IWireMessage;

/// <summary>One member as the answering node sees it: its membership status (Up, Leaving, …), whether it is reachable, and its card (null when it did not answer).</summary>
public sealed record MemberView(string Address, string Status, bool Reachable, IReadOnlyList<string> Roles, NodeCard? Card);

/// <summary>The answer to <see cref="ClusterStatusQuery"/>.</summary>
public sealed record ClusterStatus(string AnsweredBy, IReadOnlyList<MemberView> Members) : IWireMessage;

/// <summary>An operator's question: the jobs running on every coordinator node.</summary>
public sealed record RunningJobsQuery : IWireMessage;

/// <summary>One running job: where it runs and how far it is.</summary>
public sealed record RunningJob(JobId Job, string Coordinator, string Reducer, int ShardsDone, int ShardsTotal, double ElapsedSeconds, IReadOnlyList<string> Workers);

/// <summary>The answer to <see cref="RunningJobsQuery"/>.</summary>
public sealed record RunningJobs(IReadOnlyList<RunningJob> Jobs) : IWireMessage;

/// <summary>An operator's command: the node at <paramref name="Address"/> takes no more shards, finishes its running ones, and leaves the cluster.</summary>
public sealed record DrainNode(string Address) : IWireMessage;

/// <summary>An operator's question: the job tables of every role on every node (a finished job must be in none).</summary>
public sealed record ClusterJobTablesQuery : IWireMessage;

/// <summary>The answer to <see cref="ClusterJobTablesQuery"/>: each node's roles' tables, the node's address in each role name.</summary>
public sealed record ClusterJobTables(IReadOnlyList<JobTables> Tables) : IWireMessage;

/// <summary>The cluster's data-plane messages in the one wire registry, beside the pipeline's.</summary>
public static class ClusterWire
{
    private static readonly Lock Gate = new();
    private static bool registered;

    /// <summary>Registers every cluster message with <see cref="WireCodec"/> (once; safe to call from anywhere).</summary>
    public static void Register()
    {
        lock (Gate)
        {
            if (registered)
            {
                return;
            }

            registered = true;
        }

        WireCodec.Register<Ack>("Ack", 0, (c, ref w, m) => { }, (c, ref r) => new Ack());
        WireCodec.Register<Refusal>("Refusal", 1, (c, ref w, m) => w.Write(m.Reason), (c, ref r) => new Refusal(WireCodec.Text(ref r, "reason")));
        WireCodec.Register<FetchShard>("FetchShard", 2, WriteFetch, ReadFetch);
        WireCodec.Register<ProbeData>("ProbeData", 1, (c, ref w, m) => w.Write(m.Bytes), (c, ref r) => new ProbeData(WireCodec.NonNegative(r.ReadInt32(), "bytes")));
        WireCodec.Register<SubmitJob>("SubmitJob", 8, WriteSubmit, ReadSubmit);
        WireCodec.Register<GetCard>("GetCard", 0, (c, ref w, m) => { }, (c, ref r) => new GetCard());
        WireCodec.Register<JobAccepted>("JobAccepted", 5, (c, ref w, m) => { WireCodec.WriteJob(ref w, m.Job); w.Write(m.Shards); w.Write(m.Workers); w.Write(m.Coordinator); w.Write(m.Reducer); }, (c, ref r) => new JobAccepted(WireCodec.Job(ref r), r.ReadInt32(), r.ReadInt32(), WireCodec.Text(ref r, "coordinator"), WireCodec.Text(ref r, "reducer")));
        WireCodec.Register<WatchJobs>("WatchJobs", 1, (c, ref w, m) => WireCodec.WriteJobs(ref w, m.Jobs), (c, ref r) => new WatchJobs(WireCodec.ReadJobs(ref r)));
        WireCodec.Register<JobsAlive>("JobsAlive", 1, (c, ref w, m) => WireCodec.WriteJobs(ref w, m.Jobs), (c, ref r) => new JobsAlive(WireCodec.ReadJobs(ref r)));
        WireCodec.Register<DoorsQuery>("DoorsQuery", 0, (c, ref w, m) => { }, (c, ref r) => new DoorsQuery());
        WireCodec.Register<Doors>("Doors", 2, (c, ref w, m) => { WriteStrings(ref w, m.Endpoints); w.Write(m.Self); }, (c, ref r) => new Doors(ReadStrings(ref r, "endpoints"), WireCodec.Text(ref r, "self")));
        WireCodec.Register<ClusterStatusQuery>("ClusterStatusQuery", 0, (c, ref w, m) => { }, (c, ref r) => new ClusterStatusQuery());
        WireCodec.Register<NodeCard>("NodeCard", 13, (c, ref w, m) => WriteCard(ref w, m), (c, ref r) => ReadCard(ref r));
        WireCodec.Register<ClusterStatus>("ClusterStatus", 2, WriteStatus, ReadStatus);
        WireCodec.Register<RunningJobsQuery>("RunningJobsQuery", 0, (c, ref w, m) => { }, (c, ref r) => new RunningJobsQuery());
        WireCodec.Register<RunningJobs>("RunningJobs", 1, WriteRunning, ReadRunning);
        WireCodec.Register<DrainNode>("DrainNode", 1, (c, ref w, m) => w.Write(m.Address), (c, ref r) => new DrainNode(WireCodec.Text(ref r, "address")));
        WireCodec.Register<ClusterJobTablesQuery>("ClusterJobTablesQuery", 0, (c, ref w, m) => { }, (c, ref r) => new ClusterJobTablesQuery());
        WireCodec.Register<ClusterJobTables>("ClusterJobTables", 1, WriteTables, ReadTables);
    }

    private static void WriteFetch(WireCodec codec, ref MessagePackWriter w, FetchShard m)
    {
        WireCodec.WriteJob(ref w, m.Job);
        WireCodec.WriteShard(ref w, m.Shard);
    }

    /// <summary>The shard's place is checked by the store against the job's own geometry, which the request does not carry.</summary>
    private static FetchShard ReadFetch(WireCodec codec, ref MessagePackReader r)
    {
        var job = WireCodec.Job(ref r);
        WireCodec.Fields(ref r, 10, "shard");
        return new FetchShard(job, new Shard(r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadDouble(), r.ReadInt64()));
    }

    private static void WriteSubmit(WireCodec codec, ref MessagePackWriter w, SubmitJob m)
    {
        WireCodec.WriteJob(ref w, m.Job);
        WireCodec.WriteGeometry(ref w, m.Geometry);
        WireCodec.WriteDataRef(ref w, m.Store);
        WireCodec.WriteDataRef(ref w, m.Inbox);
        w.Write(m.OwnerKey);
        w.Write(m.MaxShardBytes);
        w.Write(m.Audit);
        if (m.MaskBlocks is { } bits)
        {
            w.Write(bits);
        }
        else
        {
            w.WriteNil();
        }
    }

    private static SubmitJob ReadSubmit(WireCodec codec, ref MessagePackReader r)
    {
        var job = WireCodec.Job(ref r);
        var geometry = WireCodec.ReadGeometry(ref r);
        var store = WireCodec.ReadDataRef(ref r, "store") ?? throw new WireFormatException("no store");
        var inbox = WireCodec.ReadDataRef(ref r, "inbox") ?? throw new WireFormatException("no inbox");
        var owner = WireCodec.Grant(ref r);
        long maxShardBytes = WireCodec.NonNegative(r.ReadInt64(), "max shard bytes");
        double audit = r.ReadDouble();
        if (audit is not (>= 0 and <= 1))
        {
            throw new WireFormatException($"audit fraction {audit} is outside [0, 1]");
        }

        byte[]? blocks = null;
        if (!r.TryReadNil())
        {
            var bits = r.ReadBytes() ?? throw new WireFormatException("mask blocks are nil");
            blocks = geometry.Mask is not null && bits.Length == MaskBlocks.SizeOf(geometry)
                ? System.Buffers.BuffersExtensions.ToArray(bits)
                : throw new WireFormatException($"mask blocks of {bits.Length} bytes for {geometry} (which needs {MaskBlocks.SizeOf(geometry)})");
        }
        else if (geometry.Mask is not null && geometry.Pass == JobPass.Attention)
        {
            throw new WireFormatException("an attention job with an explicit mask needs its mask blocks");
        }

        return new SubmitJob(job, geometry, store, inbox, owner, maxShardBytes, audit, blocks);
    }

    private static void WriteStrings(ref MessagePackWriter w, IReadOnlyList<string> values)
    {
        w.WriteArrayHeader(values.Count);
        foreach (string value in values)
        {
            w.Write(value);
        }
    }

    private static string[] ReadStrings(ref MessagePackReader r, string field)
    {
        var values = new string[WireCodec.Count(ref r, r.ReadArrayHeader(), field)];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = WireCodec.Text(ref r, field);
        }

        return values;
    }

    private static void WriteCard(ref MessagePackWriter w, NodeCard m)
    {
        w.Write(m.Address);
        WriteStrings(ref w, m.Roles);
        w.Write(m.DataEndpoint);
        w.Write(m.Host);
        w.Write(m.ProcessId);
        w.Write(m.Simd);
        w.Write(m.Threads);
        w.Write(m.StartedUnixMs);
        w.Write(m.ShardsDone);
        w.Write(m.InFlight);
        w.Write(m.Draining);
        w.Write(m.BytesIn);
        w.Write(m.BytesOut);
    }

    private static NodeCard ReadCard(ref MessagePackReader r)
        => new(WireCodec.Text(ref r, "address"), ReadStrings(ref r, "roles"), WireCodec.Text(ref r, "data endpoint"), WireCodec.Text(ref r, "host"), r.ReadInt32(), WireCodec.Text(ref r, "simd"), WireCodec.NonNegative(r.ReadInt32(), "threads"), r.ReadInt64(), WireCodec.NonNegative(r.ReadInt64(), "shards done"), WireCodec.NonNegative(r.ReadInt32(), "in flight"), r.ReadBoolean(), WireCodec.NonNegative(r.ReadInt64(), "bytes in"), WireCodec.NonNegative(r.ReadInt64(), "bytes out"));

    private static void WriteStatus(WireCodec codec, ref MessagePackWriter w, ClusterStatus m)
    {
        w.Write(m.AnsweredBy);
        w.WriteArrayHeader(m.Members.Count);
        foreach (var member in m.Members)
        {
            w.WriteArrayHeader(5);
            w.Write(member.Address);
            w.Write(member.Status);
            w.Write(member.Reachable);
            WriteStrings(ref w, member.Roles);
            if (member.Card is { } card)
            {
                w.WriteArrayHeader(13);
                WriteCard(ref w, card);
            }
            else
            {
                w.WriteNil();
            }
        }
    }

    private static ClusterStatus ReadStatus(WireCodec codec, ref MessagePackReader r)
    {
        string by = WireCodec.Text(ref r, "answered by");
        var members = new MemberView[WireCodec.Count(ref r, r.ReadArrayHeader(), "members")];
        for (int i = 0; i < members.Length; i++)
        {
            WireCodec.Fields(ref r, 5, "member");
            string address = WireCodec.Text(ref r, "address"), status = WireCodec.Text(ref r, "status");
            bool reachable = r.ReadBoolean();
            var roles = ReadStrings(ref r, "roles");
            NodeCard? card = null;
            if (!r.TryReadNil())
            {
                WireCodec.Fields(ref r, 13, "card");
                card = ReadCard(ref r);
            }

            members[i] = new MemberView(address, status, reachable, roles, card);
        }

        return new ClusterStatus(by, members);
    }

    private static void WriteRunning(WireCodec codec, ref MessagePackWriter w, RunningJobs m)
    {
        w.WriteArrayHeader(m.Jobs.Count);
        foreach (var job in m.Jobs)
        {
            w.WriteArrayHeader(7);
            WireCodec.WriteJob(ref w, job.Job);
            w.Write(job.Coordinator);
            w.Write(job.Reducer);
            w.Write(job.ShardsDone);
            w.Write(job.ShardsTotal);
            w.Write(job.ElapsedSeconds);
            WriteStrings(ref w, job.Workers);
        }
    }

    private static RunningJobs ReadRunning(WireCodec codec, ref MessagePackReader r)
    {
        var jobs = new RunningJob[WireCodec.Count(ref r, r.ReadArrayHeader(), "jobs")];
        for (int i = 0; i < jobs.Length; i++)
        {
            WireCodec.Fields(ref r, 7, "running job");
            jobs[i] = new RunningJob(WireCodec.Job(ref r), WireCodec.Text(ref r, "coordinator"), WireCodec.Text(ref r, "reducer"), r.ReadInt32(), r.ReadInt32(), r.ReadDouble(), ReadStrings(ref r, "workers"));
        }

        return new RunningJobs(jobs);
    }

    private static void WriteTables(WireCodec codec, ref MessagePackWriter w, ClusterJobTables m)
    {
        w.WriteArrayHeader(m.Tables.Count);
        foreach (var table in m.Tables)
        {
            w.WriteArrayHeader(2);
            w.Write(table.Role);
            WireCodec.WriteJobs(ref w, table.Jobs);
        }
    }

    private static ClusterJobTables ReadTables(WireCodec codec, ref MessagePackReader r)
    {
        var tables = new JobTables[WireCodec.Count(ref r, r.ReadArrayHeader(), "tables")];
        for (int i = 0; i < tables.Length; i++)
        {
            WireCodec.Fields(ref r, 2, "job table");
            tables[i] = new JobTables(WireCodec.Text(ref r, "role"), WireCodec.ReadJobs(ref r));
        }

        return new ClusterJobTables(tables);
    }
}
