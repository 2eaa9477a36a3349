using System.Collections.Concurrent;
using AttentionActors.Actors;
using AttentionActors.Cluster.Wire;

namespace AttentionActors.Cluster.Transport;

/// <summary>A live node as its last heartbeat described it, and when that heartbeat arrived here.</summary>
public sealed record Member(NodeHeartbeat Heartbeat, DateTimeOffset SeenAt);

/// <summary>
/// Which nodes are alive, from their heartbeats; and death watch of remote actors: when a node
/// falls silent for the node timeout (or says it is leaving), every watcher of an actor on it gets
/// <see cref="Terminated"/>. A watch on a node never heard from fires after the same timeout.
/// </summary>
internal sealed class Membership(TimeProvider time, TimeSpan nodeTimeout)
{
    private readonly ConcurrentDictionary<string, Member> members = new();
    private readonly ConcurrentDictionary<string, DateTimeOffset> unseenSince = new();
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<(IActorRef Watched, IActorRef Watcher), byte>> watches = new();
    private readonly Lock gate = new();

    /// <summary>Raised when a node is taken for dead or leaves (its name and why).</summary>
    public event Action<string, string>? NodeDown;

    public IReadOnlyCollection<Member> Alive => [.. members.Values];

    public IEnumerable<Member> WithRole(string role) => members.Values.Where(m => !m.Heartbeat.Leaving && m.Heartbeat.Roles.Contains(role));

    /// <summary>Whether a live coordinator's heartbeat lists <paramref name="job"/> as ended.</summary>
    public bool HasEnded(string job) => members.Values.Any(m => m.Heartbeat.EndedJobs is { } ended && ended.Contains(job));

    public void Observe(NodeHeartbeat beat)
    {
        if (beat.Leaving)
        {
            Down(beat.Node, "it is shutting down");
            return;
        }

        members[beat.Node] = new Member(beat, time.GetUtcNow());
        unseenSince.TryRemove(beat.Node, out _);
    }

    public void Watch(IActorRef watched, string node, IActorRef watcher)
    {
        lock (gate)
        {
            watches.GetOrAdd(node, _ => new()).TryAdd((watched, watcher), 0);
            if (!members.ContainsKey(node))
            {
                unseenSince.TryAdd(node, time.GetUtcNow());
            }
        }
    }

    public void Unwatch(IActorRef watched, string node, IActorRef watcher)
    {
        if (watches.TryGetValue(node, out var set))
        {
            set.TryRemove((watched, watcher), out _);
        }
    }

    /// <summary>Declares dead every node silent for longer than the timeout, and fires watches on nodes never heard from.</summary>
    public void Sweep()
    {
        var now = time.GetUtcNow();
        foreach (var (node, member) in members)
        {
            if (now - member.SeenAt > nodeTimeout)
            {
                Down(node, $"no heartbeat for {(now - member.SeenAt).TotalSeconds:F1} s");
            }
        }

        foreach (var (node, since) in unseenSince)
        {
            if (now - since > nodeTimeout)
            {
                Down(node, $"no heartbeat in {nodeTimeout.TotalSeconds:F0} s");
            }
        }
    }

    private void Down(string node, string why)
    {
        List<(IActorRef Watched, IActorRef Watcher)> fired;
        lock (gate)
        {
            bool known = members.TryRemove(node, out _) | unseenSince.TryRemove(node, out _);
            fired = watches.TryRemove(node, out var set) ? [.. set.Keys] : [];
            if (!known && fired.Count == 0)
            {
                return;
            }
        }

        NodeDown?.Invoke(node, why);
        foreach (var (watched, watcher) in fired)
        {
            watcher.Tell(new Terminated(watched), NoSender.Instance);
        }
    }
}
