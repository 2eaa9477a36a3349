using Akka.Actor;
using Akka.Serialization;

namespace AttentionActors.Pipeline.Wire;

/// <summary>
/// Akka's serializer for every <see cref="IWireMessage"/>: <see cref="WireCodec"/>'s MessagePack
/// form under a string manifest. Bound to the marker interface in <see cref="PipelineConfig"/>, so
/// every node (and, with <c>serialize-messages = on</c>, every local send) uses it.
/// </summary>
public sealed class WireSerializer : SerializerWithStringManifest
{
    /// <summary>This serializer's id, the same on every node.</summary>
    public const int Id = 7351;

    private readonly WireCodec codec;

    public WireSerializer(ExtendedActorSystem system)
        : base(system) => codec = new WireCodec(system);

    public override int Identifier => Id;

    public override string Manifest(object o) => WireCodec.ManifestOf(o);

    public override byte[] ToBinary(object obj) => codec.Encode(obj);

    public override object FromBinary(byte[] bytes, string manifest) => codec.Decode(manifest, bytes);
}
