using System.Reflection;
using Akka.Actor;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Wire;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Tests;

/// <summary>Every message that may cross processes carries only data and actor refs.</summary>
public sealed class WireMessageTests
{
    /// <summary>Carries an exception: the kind of message the rule forbids.</summary>
    private sealed record Leaky(JobId Job, Exception Cause) : IWireMessage;

    /// <summary>Carries a callback, hidden one level down.</summary>
    private sealed record Nested(JobId Job, Holder Inner) : IWireMessage;

    private sealed record Holder(Func<int> Callback);

    public static IEnumerable<Type> WireTypes => typeof(EmbeddedPipeline).Assembly.GetTypes().Where(t => typeof(IWireMessage).IsAssignableFrom(t) && !t.IsInterface);

    [Fact]
    public void The_pipelines_wire_messages_are_the_protocol()
    {
        var names = WireTypes.Select(t => t.Name).Order().ToArray();
        Type[] expected =
        [
            typeof(AttentionCompleted), typeof(AttentionFailed), typeof(CancelJob), typeof(ComputeShard), typeof(ExpectShards), typeof(FailJob),
            typeof(JobEnded), typeof(JobProgress), typeof(PartialComputed), typeof(RowsFinished), typeof(ShardFailed), typeof(ShardMerged),
            typeof(ShardStarted), typeof(WatchJob), typeof(AuditMismatch), typeof(CoverageComputed), typeof(CoverageFinished), typeof(WeightsComputed), typeof(WeightsFinished),
            typeof(WorkerReady), typeof(ShardDispatched), typeof(ShardUndeliverable), typeof(JobTablesQuery), typeof(JobTables), typeof(ShardsSent),
        ];
        Assert.Equal(expected.Select(t => t.Name).Order(), names);

        // The codec's registry is the same list: nothing crosses the wire that is not in it, and it names nothing else.
        Assert.Equal(names, WireCodec.Manifests.Keys.Select(t => t.Name).Order().ToArray());
    }

    [Fact]
    public void Wire_messages_carry_no_exceptions_and_no_in_process_objects()
    {
        foreach (var type in WireTypes)
        {
            Assert.True(IsRecord(type), $"{type.Name} must be a record (value equality)");
            var problem = Unsafe(type, [], type.Name);
            Assert.True(problem is null, problem);
        }

        Assert.Contains("Exception", Unsafe(typeof(Leaky), [], nameof(Leaky)), StringComparison.Ordinal);
        Assert.Contains("Func", Unsafe(typeof(Nested), [], nameof(Nested)), StringComparison.Ordinal);
    }

    [Fact]
    public void Wire_messages_compare_by_value()
    {
        Assert.Equal(new CancelJob(new JobId("a"), "x"), new CancelJob(new JobId("a"), "x"));
        var shard = new Shard(1, 0, 2, 16, 32, 0, 4, 100, 1e3, 4096);
        Assert.Equal(shard, shard with { });
        Assert.NotEqual(shard, shard with { BlockEnd = 5 });
    }

    /// <summary>Why <paramref name="type"/> cannot travel, or null: it must reach only data and actor refs.</summary>
    private static string? Unsafe(Type type, HashSet<Type> seen, string path)
    {
        if (!seen.Add(type) || Plain(type))
        {
            return null;
        }

        if (typeof(Exception).IsAssignableFrom(type) || typeof(Delegate).IsAssignableFrom(type) || typeof(Task).IsAssignableFrom(type)
            || type == typeof(CancellationToken) || type == typeof(CancellationTokenSource) || type == typeof(Thread) || type == typeof(ActorSystem)
            || typeof(IActorContext).IsAssignableFrom(type) || typeof(Akka.Actor.ActorSystem).IsAssignableFrom(type) || typeof(Stream).IsAssignableFrom(type) || type == typeof(object)
            || (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IProgress<>)))
        {
            return $"{path} is a {type.Name}, which cannot cross processes";
        }

        if (type.IsArray)
        {
            return Unsafe(type.GetElementType()!, seen, $"{path}[]");
        }

        if (type.IsGenericType && (type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>) || type.GetGenericTypeDefinition() == typeof(ReadOnlyMemory<>) || type.GetGenericTypeDefinition() == typeof(Nullable<>)))
        {
            return Unsafe(type.GetGenericArguments()[0], seen, $"{path}<>");
        }

        foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.GetIndexParameters().Length == 0))
        {
            if (Unsafe(property.PropertyType, seen, $"{path}.{property.Name}") is { } problem)
            {
                return problem;
            }
        }

        return null;
    }

    private static bool Plain(Type t) => t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(TimeSpan) || t == typeof(decimal)
        || t == typeof(JobId) || typeof(IActorRef).IsAssignableFrom(t) || t == typeof(ActorPath)
        || (t.IsValueType && t.IsGenericType && t.FullName!.StartsWith("System.ValueTuple", StringComparison.Ordinal) && t.GetGenericArguments().All(Plain));

    private static bool IsRecord(Type t) => t.GetMethod("<Clone>$") is not null || (t.IsValueType && t.GetMethod("PrintMembers", BindingFlags.NonPublic | BindingFlags.Instance) is not null);
}
