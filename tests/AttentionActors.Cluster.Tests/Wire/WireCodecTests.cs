using AttentionActors.Actors;
using AttentionActors.Cluster.Wire;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Partials;
using AttentionActors.Kernels.Tests;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Reduction;
using AttentionActors.Pipeline.Workers;
using Google.Protobuf;
using P = AttentionActors.Cluster.Wire.Proto;

namespace AttentionActors.Cluster.Tests.Wire;

public sealed class WireCodecTests
{
    private static readonly ActorAddress Target = new("node-b", "reducer");
    private readonly WireCodec codec = new(address => new AddressRef(address));

    private static AttentionGeometry Geometry() => AttentionGeometry.Create(
        new TensorShape("Q", 2, 4, 100, 24),
        new TensorShape("K", 2, 2, 130, 24),
        new TensorShape("V", 2, 2, 130, 40),
        new AttentionOptions
        {
            Causal = true,
            Alignment = DiagonalAlignment.BottomRight,
            Window = (17, -1),
            KeyLengths = [130, 55],
            SoftCap = 30f,
            AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(4),
            Scale = 0.3f,
            BlockSize = 32,
        });

    private Delivered RoundTrip(object message) => codec.Decode(WireCodec.Encode(message, Target, new AddressRef(new ActorAddress("node-a", "job-1"))));

    [Fact]
    public void Every_wire_message_of_the_pipeline_survives_the_round_trip()
    {
        var job = new JobId("job-1");
        var g = Geometry();
        var shard = new Shard(3, 1, 2, 40, 20, 1, 3, 777, 1.5e6, 4096);
        var input = new ShardInput(g, 1, 2, 40, 20, 1, 3, Floats(20 * 24, 1), Floats(64 * 24, 2), Floats(64 * 40, 3));
        var partials = new PartialSet([new TreeNode(1, 0), new TreeNode(0, 2)], 3, 40, Floats(6, 4), Floats(6, 5), Floats(6 * 40, 6));
        var coordinator = new AddressRef(new ActorAddress("node-a", "jobs/job-job-1"));
        var reducer = new AddressRef(new ActorAddress("node-c", "reducer"));

        var compute = Assert.IsType<ComputeShard>(RoundTrip(new ComputeShard(job, shard, 2, input, reducer, coordinator)).Message);
        Assert.Equal(shard, compute.Shard);
        Assert.Equal(2, compute.Attempt);
        Assert.Equal(reducer, compute.Reducer);
        Assert.Equal(coordinator, compute.Coordinator);
        TestData.AssertBitwise(input.Q.Span, compute.Input.Q.Span, "q");
        TestData.AssertBitwise(input.K.Span, compute.Input.K.Span, "k");
        TestData.AssertBitwise(input.V.Span, compute.Input.V.Span, "v");
        Assert.Equal(g.Options.KeyLengths, compute.Input.Geometry.Options.KeyLengths);
        Assert.Equal(g.Options.AlibiSlopes, compute.Input.Geometry.Options.AlibiSlopes);
        Assert.Equal(g.Options.Window, compute.Input.Geometry.Options.Window);
        Assert.Equal(g.Scale, compute.Input.Geometry.Scale);
        Assert.Equal(g.DiagonalOffset, compute.Input.Geometry.DiagonalOffset);
        Assert.Equal(g.Options.SoftCap, compute.Input.Geometry.Options.SoftCap);

        var partial = Assert.IsType<PartialComputed>(RoundTrip(new PartialComputed(job, 3, 2, partials)).Message);
        Assert.Equal(partials.Nodes, partial.Partials.Nodes);
        TestData.AssertBitwise(partials.O, partial.Partials.O, "o");
        TestData.AssertBitwise(partials.M, partial.Partials.M, "m");

        var expect = Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, g, [shard, shard with { Id = 4 }], reducer, coordinator)).Message);
        Assert.Equal([shard, shard with { Id = 4 }], expect.Shards);

        var rows = Assert.IsType<RowsFinished>(RoundTrip(new RowsFinished(job, 1, 3, 10, 2, Floats(80, 7), [1.5f, float.NegativeInfinity])).Message);
        Assert.Equal(float.NegativeInfinity, rows.Lse[1]);
        Assert.Equal(80, rows.Output.Length);
        Assert.Null(rows.Entropy);
        var withEntropy = Assert.IsType<RowsFinished>(RoundTrip(new RowsFinished(job, 1, 3, 10, 2, Floats(80, 7), [1.5f, 2f], [0.25f, 3.5f])).Message);
        Assert.Equal([0.25f, 3.5f], withEntropy.Entropy!);
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new RowsFinished(job, 1, 3, 10, 2, Floats(80, 7), [1.5f, 2f], [0.25f]), Target, null)));

        // The coverage pass: its geometry's pass, a shard's lse instead of V, subtrees back, keys out.
        var cg = g.ForPass(JobPass.Coverage);
        var coverageInput = new ShardInput(cg, 1, 2, 32, 32, 1, 3, Floats(32 * 24, 1), Floats(64 * 24, 2), ReadOnlyMemory<float>.Empty, Floats(32, 9));
        var cshard = shard with { RowStart = 32, RowCount = 32 };
        var coverageShard = Assert.IsType<ComputeShard>(RoundTrip(new ComputeShard(job, cshard, 1, coverageInput, reducer, coordinator)).Message);
        Assert.Equal(JobPass.Coverage, coverageShard.Input.Geometry.Pass);
        Assert.Equal(0, coverageShard.Input.V.Length);
        TestData.AssertBitwise(coverageInput.Lse.Span, coverageShard.Input.Lse.Span, "lse");
        Assert.Equal(0, compute.Input.Lse.Length);
        Assert.Equal(JobPass.Attention, compute.Input.Geometry.Pass);
        var parts = new CoverageParts([new TreeNode(2, 1), new TreeNode(0, 8)], 64, Floats(128, 10));
        var coverage = Assert.IsType<CoverageComputed>(RoundTrip(new CoverageComputed(job, 3, 2, parts)).Message);
        Assert.Equal(parts.Nodes, coverage.Parts.Nodes);
        TestData.AssertBitwise(parts.Values, coverage.Parts.Values, "coverage subtrees");
        var keys = Assert.IsType<CoverageFinished>(RoundTrip(new CoverageFinished(job, 1, 1, 64, 3, [0.5f, 2f, 0f])).Message);
        Assert.Equal([0.5f, 2f, 0f], keys.Coverage);
        Assert.Equal((1, 1, 64, 3), (keys.Batch, keys.KvHead, keys.KeyStart, keys.KeyCount));
        Assert.Equal(JobPass.Coverage, Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, cg, [shard], reducer, coordinator)).Message).Geometry.Pass);
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new CoverageFinished(job, 1, 1, 64, 4, [0.5f, 2f, 0f]), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, cshard, 1, coverageInput with { Lse = Floats(31, 9) }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, cshard, 1, coverageInput with { V = Floats(64 * 40, 3) }, reducer, coordinator), Target, null)));

        // Variable-length sequences and per-batch ALiBi slopes survive in the geometry's options.
        var varlen = AttentionGeometry.Create(new TensorShape("Q", 2, 4, 100, 24), new TensorShape("K", 2, 2, 130, 24), new TensorShape("V", 2, 2, 130, 40),
            new AttentionOptions { SequenceLengths = [new(100, 7), new(0, 130)], Causal = true, Alignment = DiagonalAlignment.BottomRight, AlibiSlopes = [.. Enumerable.Range(0, 8).Select(i => i * 0.1f)], BlockSize = 32 });
        var varlenOptions = Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, varlen, [shard], reducer, coordinator)).Message).Geometry.Options;
        Assert.Equal(varlen.Options.SequenceLengths, varlenOptions.SequenceLengths);
        Assert.Equal(varlen.Options.AlibiSlopes, varlenOptions.AlibiSlopes);
        Assert.Null(varlenOptions.KeyLengths);

        // The weights pass: its window in the geometry, every head's rows and keys in a shard, cells back and out.
        var window = new WeightsWindow(1, null, 10, 90, 5, 125, 8, 12, WeightPooling.Max);
        var wg = g.ForWeights(window);
        var wshard = shard with { RowStart = 20, RowCount = 20, BlockStart = 1, BlockEnd = 3 };
        Assert.Equal(new WeightsCellRange(1, 3, 3, 10, 4), window.CellsOf(wg, 20, 20, 1, 3));
        var weightsInput = new ShardInput(wg, 1, 0, 20, 20, 1, 3, Floats(4 * 20 * 24, 19), Floats(2 * 96 * 24, 20), ReadOnlyMemory<float>.Empty, Floats(4 * 20, 21));
        var weightsShard = Assert.IsType<ComputeShard>(RoundTrip(new ComputeShard(job, wshard with { Head = 0 }, 1, weightsInput, reducer, coordinator)).Message);
        Assert.Equal(window, weightsShard.Input.Geometry.Weights);
        Assert.Equal(JobPass.Weights, weightsShard.Input.Geometry.Pass);
        TestData.AssertBitwise(weightsInput.K.Span, weightsShard.Input.K.Span, "weights shard keys");
        TestData.AssertBitwise(weightsInput.Lse.Span, weightsShard.Input.Lse.Span, "weights shard lse");
        Assert.Equal(window with { Head = 3, Pooling = WeightPooling.Mean }, Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, g.ForWeights(window with { Head = 3, Pooling = WeightPooling.Mean }), [shard], reducer, coordinator)).Message).Geometry.Weights);
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, wshard with { Head = 0 }, 1, weightsInput with { K = Floats(2 * 64 * 24, 20) }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, wshard with { Head = 0, RowStart = 25 }, 1, weightsInput, reducer, coordinator), Target, null)));
        var cells = new WeightsCells(new WeightsCellRange(1, 3, 3, 10, 4), Floats(14, 22));
        var computed = Assert.IsType<WeightsComputed>(RoundTrip(new WeightsComputed(job, 3, 2, cells)).Message);
        Assert.Equal(cells.Range, computed.Cells.Range);
        TestData.AssertBitwise(cells.Values, computed.Cells.Values, "weight cells");
        var band = Assert.IsType<WeightsFinished>(RoundTrip(new WeightsFinished(job, 1, 2, 3, 2, [0.5f, 0.25f, 0f, 1f])).Message);
        Assert.Equal((1, 2, 3, 2), (band.CellRowStart, band.CellRowCount, band.CellColStart, band.CellColCount));
        Assert.Equal([0.5f, 0.25f, 0f, 1f], band.Values);
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new WeightsFinished(job, 1, 2, 3, 3, [0.5f, 0.25f, 0f, 1f]), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new WeightsComputed(job, 3, 2, cells with { Values = Floats(13, 22) }), Target, null)));

        // A layer job: the geometry's layer shape, and a shard's inputs and head weights instead of Q, K, V.
        var lg = AttentionGeometry.Create(new TensorShape("Q", 2, 4, 100, 8), new TensorShape("K", 2, 4, 130, 8), new TensorShape("V", 2, 4, 130, 8), new AttentionOptions { BlockSize = 32 })
            .WithLayer(new LayerShape(24, 20, 12, true, true, false, true));
        var layerRows = new LayerRows(Floats(20 * 24, 11), Floats(64 * 20, 12), Floats(64 * 12, 13), Floats(8 * 24, 14), Floats(8, 15), Floats(8 * 20, 16), ReadOnlyMemory<float>.Empty, Floats(8 * 12, 17), Floats(8, 18));
        var layerInput = new ShardInput(lg, 1, 2, 40, 20, 1, 3, ReadOnlyMemory<float>.Empty, ReadOnlyMemory<float>.Empty, ReadOnlyMemory<float>.Empty) { Layer = layerRows };
        var layerShard = Assert.IsType<ComputeShard>(RoundTrip(new ComputeShard(job, shard, 1, layerInput, reducer, coordinator)).Message);
        Assert.Equal(lg.Layer, layerShard.Input.Geometry.Layer);
        Assert.NotNull(layerShard.Input.Layer);
        TestData.AssertBitwise(layerRows.X.Span, layerShard.Input.Layer!.X.Span, "layer x");
        TestData.AssertBitwise(layerRows.ValueIn.Span, layerShard.Input.Layer.ValueIn.Span, "layer value input");
        TestData.AssertBitwise(layerRows.Bv.Span, layerShard.Input.Layer.Bv.Span, "layer b_v");
        Assert.Equal(0, layerShard.Input.Layer.Bk.Length);
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, shard, 1, layerInput with { Layer = layerRows with { Bk = Floats(8, 1) } }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, shard, 1, layerInput with { Layer = null }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, shard, 1, input with { Layer = layerRows }, reducer, coordinator), Target, null)));

        object[] small =
        [
            new ShardStarted(job, 3, 2), new ShardFailed(job, 3, 2, "boom"), new ShardMerged(job, 3), new ShardPoisoned(job, 3, 2, 4),
            new CancelJob(job, "why"), new JobEnded(job, "completed"), new FailJob(job, "no"), new AttentionCompleted(job, 99),
            new AttentionFailed(job, "bad", true), new JobProgress(job, 1, 2, 3, 4, TimeSpan.FromSeconds(5)),
        ];
        foreach (var message in small)
        {
            Assert.Equal(message, RoundTrip(message).Message);
        }

        var watch = Assert.IsType<WatchJob>(RoundTrip(new WatchJob(coordinator, reducer)).Message);
        Assert.Equal(coordinator, watch.Coordinator);
        var chunk = Assert.IsType<TensorChunk>(RoundTrip(new TensorChunk(job, TensorRole.V, 12, Floats(5, 8), true)).Message);
        Assert.Equal(Floats(5, 8), chunk.Data.ToArray());
        var submit = Assert.IsType<SubmitAttention>(RoundTrip(new SubmitAttention(job, g, 1 << 20)).Message);
        Assert.Equal(g.QueryShape, submit.Geometry.QueryShape);
        var sender = RoundTrip(new ShardMerged(job, 1)).Sender;
        Assert.Equal(new ActorPath("node://node-a", "job-1"), sender.Path);
    }

    [Fact]
    public void An_explicit_mask_travels_as_its_shape_a_shards_window_and_the_reducers_block_map()
    {
        var job = new JobId("job-m");
        var g = Geometry().WithMask(new MaskShape(1, 4));
        var shard = new Shard(3, 1, 2, 40, 20, 1, 3, 777, 1.5e6, 4096);
        var mask = Floats(20 * 64, 7);
        mask[5] = float.NegativeInfinity;
        var input = new ShardInput(g, 1, 2, 40, 20, 1, 3, Floats(20 * 24, 1), Floats(64 * 24, 2), Floats(64 * 40, 3)) { Mask = mask };
        var coordinator = new AddressRef(new ActorAddress("node-a", "jobs/job-job-m"));
        var reducer = new AddressRef(new ActorAddress("node-c", "reducer"));

        var compute = Assert.IsType<ComputeShard>(RoundTrip(new ComputeShard(job, shard, 1, input, reducer, coordinator)).Message);
        Assert.Equal(new MaskShape(1, 4), compute.Input.Geometry.Mask);
        TestData.AssertBitwise(mask, compute.Input.Mask.Span, "mask window");

        var bits = new byte[MaskBlocks.SizeOf(g)];
        bits[3] = 0b1010_0101;
        var expect = Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, g, [shard], reducer, coordinator, null, MaskBlocks.FromBits(g, bits))).Message);
        Assert.Equal(bits, expect.MaskBlocks!.Bits);
        Assert.Null(Assert.IsType<ExpectShards>(RoundTrip(new ExpectShards(job, g, [shard], reducer, coordinator)).Message).MaskBlocks);

        // Malformed: a window of the wrong size, a mask for a job without one, a block map of the wrong size or for an unmasked job.
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, shard, 1, input with { Mask = Floats(20 * 63, 1) }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ComputeShard(job, shard, 1, input with { Geometry = Geometry() }, reducer, coordinator), Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ExpectShards(job, g, [shard], reducer, coordinator, null, MaskBlocks.FromBits(g, bits)) with { Geometry = g.WithMask(new MaskShape(1, 1)) }, Target, null)));
        Assert.Throws<WireFormatException>(() => codec.Decode(WireCodec.Encode(new ExpectShards(job, g, [shard], reducer, coordinator, null, MaskBlocks.FromBits(g, bits)) with { Geometry = Geometry() }, Target, null)));
        var chunk = Assert.IsType<TensorChunk>(RoundTrip(new TensorChunk(job, TensorRole.Mask, 12, Floats(5, 8), true)).Message);
        Assert.Equal(TensorRole.Mask, chunk.Tensor);
    }

    [Fact]
    public void The_codec_has_a_wire_form_for_every_wire_message()
    {
        var types = new[] { typeof(ComputeShard).Assembly, typeof(WireCodec).Assembly }
            .SelectMany(a => a.GetTypes())
            .Where(t => typeof(IWireMessage).IsAssignableFrom(t) && !t.IsInterface && !t.IsAbstract)
            .ToList();
        Assert.True(types.Count >= 19, $"only {types.Count} wire message types found");
        foreach (var type in types)
        {
            var blank = System.Runtime.CompilerServices.RuntimeHelpers.GetUninitializedObject(type);
            try
            {
                WireCodec.Encode(blank, Target, null);
            }
            catch (ArgumentException ex) when (ex.Message.Contains("has no wire form", StringComparison.Ordinal))
            {
                Assert.Fail($"{type.Name} is a wire message without a wire form");
            }
            catch (Exception ex) when (ex is NullReferenceException or ArgumentNullException)
            {
                // A blank record has null fields; reaching them means its case exists.
            }
        }
    }

    [Fact]
    public void Garbage_truncated_and_foreign_bytes_are_refused_with_a_reason()
    {
        var valid = WireCodec.Encode(new ShardMerged(new JobId("j"), 1), Target, null);
        var cases = new Dictionary<string, byte[]>
        {
            ["garbage"] = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
            ["truncated"] = valid[..^2],
            ["empty"] = [],
            ["text"] = "{\"job\": 1}"u8.ToArray(),
        };
        foreach (var (name, bytes) in cases)
        {
            var error = Assert.Throws<WireFormatException>(() => codec.Decode(bytes));
            Assert.False(string.IsNullOrWhiteSpace(error.Message), name);
        }
    }

    [Fact]
    public void Another_wire_version_is_refused_naming_both_versions()
    {
        var envelope = P.Envelope.Parser.ParseFrom(WireCodec.Encode(new ShardMerged(new JobId("j"), 1), Target, null));
        envelope.Version = 2;

        var error = Assert.Throws<WireFormatException>(() => codec.Decode(envelope.ToByteArray()));

        Assert.Contains("version 2", error.Message, StringComparison.Ordinal);
        Assert.Contains("version 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Byte_counts_that_do_not_match_the_shapes_are_refused_before_use()
    {
        var g = Geometry();
        var shard = new Shard(0, 0, 0, 0, 10, 0, 1, 0, 0, 0);
        var input = new ShardInput(g, 0, 0, 0, 10, 0, 1, Floats(10 * 24, 1), Floats(32 * 24, 2), Floats(32 * 40, 3));
        var envelope = P.Envelope.Parser.ParseFrom(WireCodec.Encode(new ComputeShard(new JobId("j"), shard, 1, input, new AddressRef(Target), new AddressRef(Target)), Target, null));

        envelope.Compute.K = ByteString.CopyFrom(new byte[(32 * 24 * 4) - 4]);
        Assert.Contains("k holds 767 float32 values; its shape needs 768", Assert.Throws<WireFormatException>(() => codec.Decode(envelope.ToByteArray())).Message, StringComparison.Ordinal);

        envelope.Compute.K = ByteString.CopyFrom(new byte[(32 * 24 * 4) + 2]);
        Assert.Contains("not a whole number of float32", Assert.Throws<WireFormatException>(() => codec.Decode(envelope.ToByteArray())).Message, StringComparison.Ordinal);

        envelope.Compute.Shard.RowStart = 95;
        Assert.Contains("outside the job's geometry", Assert.Throws<WireFormatException>(() => codec.Decode(envelope.ToByteArray())).Message, StringComparison.Ordinal);

        envelope.Compute.Geometry.Q.Dim = 0;
        Assert.Throws<WireFormatException>(() => codec.Decode(envelope.ToByteArray()));
    }

    private static float[] Floats(int n, int seed)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble())];
    }

    /// <summary>A reference that only carries an address (what the transport's refs do, minus the broker).</summary>
    private sealed class AddressRef(ActorAddress address) : ActorRefBase, IRemoteAddressable
    {
        public ActorAddress Address { get; } = address;

        public override ActorPath Path { get; } = new($"node://{address.Node}", address.Name);

        public override void Tell(object message, IActorRef? sender = null)
        {
        }
    }
}
