namespace AttentionActors.Pipeline;

/// <summary>
/// A message that may cross processes. Every such type is listed in the one codec registry
/// (<see cref="Wire.WireCodec"/>), carries only data and actor references (never an exception,
/// a delegate or another in-process object), and is checked field by field when it is decoded.
/// Messages that never leave their process implement Akka's <c>INoSerializationVerificationNeeded</c> instead.
/// </summary>
public interface IWireMessage;
