using System.Text;
using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Tests;

using static AttentionActors.Cli.Tests.CliRunner;

namespace AttentionActors.Cli.Tests;

/// <summary>`attention run` in-process, on real .npy files in a temporary folder.</summary>
public sealed class RunCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("attention-cli-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => System.IO.Path.Combine(dir, name);

    /// <summary>Writes a .npy with a hand-made header, so broken files can be made too.</summary>
    private string WriteRaw(string name, string descr, string shape, byte[] data, bool fortran = false)
    {
        string dict = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': ({shape}), }}";
        int padded = ((10 + dict.Length + 1 + 63) / 64) * 64;
        string header = dict + new string(' ', padded - 10 - dict.Length - 1) + "\n";
        using var s = File.Create(PathOf(name));
        s.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y']);
        s.Write([1, 0]);
        s.Write(BitConverter.GetBytes((ushort)header.Length));
        s.Write(Encoding.ASCII.GetBytes(header));
        s.Write(data);
        return PathOf(name);
    }

    private string WriteF64(string name, AttentionTensor t, string shape)
    {
        var bytes = t.Data.ToArray().SelectMany(x => BitConverter.GetBytes((double)x)).ToArray();
        return WriteRaw(name, "<f8", shape, bytes);
    }

    private string WriteF32(string name, AttentionTensor t, int[] shape)
    {
        NpyFile.Write(PathOf(name), t.Data.Span, shape);
        return PathOf(name);
    }

    [Fact]
    public async Task Float64_N_by_D_files_round_trip_to_the_single_node_bits()
    {
        var (q, k, v) = TestData.Qkv(1, 1, 1, 1, 300, 450, 24, 16);
        var (code, _, err) = await Run("run", "--q", WriteF64("q.npy", q, "300, 24"), "--k", WriteF64("k.npy", k, "450, 24"), "--v", WriteF64("v.npy", v, "450, 16"),
            "--out", PathOf("out.npy"), "--lse-out", PathOf("lse.npy"), "--workers", "3", "--quiet");
        Assert.True(code == 0, err);
        using var output = NpyFile.Read(PathOf("out.npy"));
        using var lse = NpyFile.Read(PathOf("lse.npy"));
        Assert.Equal([300, 16], output.Shape);
        Assert.Equal([300], lse.Shape);

        // float64 inputs are rounded to float32 once, so single-node on the float32 copies must match exactly.
        var expected = Attention.Compute(q, k, v);
        TestData.AssertBitwise(expected.Output.Data.Span, output.Data.Span, "out.npy");
        TestData.AssertBitwise(expected.Lse, lse.Data.Span, "lse.npy");
    }

    [Fact]
    public async Task Four_dimensional_gqa_files_round_trip_with_masks_and_verify()
    {
        var (q, k, v) = TestData.Qkv(2, 2, 4, 2, 260, 200, 16, 8);
        var (code, stdout, err) = await Run("run", "--q", WriteF32("q.npy", q, [2, 4, 260, 16]), "--k", WriteF32("k.npy", k, [2, 2, 200, 16]), "--v", WriteF32("v.npy", v, [2, 2, 200, 8]),
            "--causal", "bottom-right", "--key-lengths", "200,150", "--window", "64", "--out", PathOf("out.npy"), "--verify", "--workers", "4", "--block", "32");
        Assert.True(code == 0, err + stdout);
        Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);
        using var output = NpyFile.Read(PathOf("out.npy"));
        Assert.Equal([2, 4, 260, 8], output.Shape);
        var expected = Attention.Compute(q, k, v, new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, KeyLengths = [200, 150], Window = (64, 0), BlockSize = 32 });
        TestData.AssertBitwise(expected.Output.Data.Span, output.Data.Span, "out.npy");
    }

    [Fact]
    public async Task Random_inputs_with_every_score_function_run_and_verify()
    {
        foreach (var extra in new[] { new[] { "--score", "cosine", "--temperature", "0.2" }, ["--score", "additive", "--additive-dim", "8"], ["--score", "gaussian", "--sigma", "3"], ["--alibi", "--softcap", "5", "--scale", "0.3"] })
        {
            var (code, stdout, err) = await Run(["run", "--random", "--seq", "150", "--dim", "16", "--heads", "2", "--verify", .. extra]);
            Assert.True(code == 0, $"{string.Join(' ', extra)}: {err}{stdout}");
            Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Alibi_slopes_per_batch_and_head_with_an_aligned_window_and_no_causal_mask_verify()
    {
        var (q, k, v) = TestData.Qkv(31, 2, 4, 2, 70, 110, 8, 8);
        float[] slopes = [0.5f, 0.25f, 0.125f, 0.0625f, 0.3f, 0.03f, 1f, 0f];
        string slopesFile = WriteRaw("slopes.npy", "<f4", "2, 4", [.. slopes.SelectMany(BitConverter.GetBytes)]);
        var (code, stdout, err) = await Run(["run", "--q", WriteF32("q.npy", q, [2, 4, 70, 8]), "--k", WriteF32("k.npy", k, [2, 2, 110, 8]), "--v", WriteF32("v.npy", v, [2, 2, 110, 8]),
            "--alibi-slopes", slopesFile, "--align", "bottom-right", "--window", "20,5", "--block", "32", "--workers", "3", "--verify", "--out", PathOf("out.npy")]);
        Assert.True(code == 0, err + stdout);
        Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);
        using var output = NpyFile.Read(PathOf("out.npy"));
        var expected = Attention.Compute(q, k, v, new AttentionOptions { AlibiSlopes = slopes, Alignment = DiagonalAlignment.BottomRight, Window = (20, 5), BlockSize = 32 });
        TestData.AssertBitwise(expected.Output.Data.Span, output.Data.Span, "out.npy");
    }

    [Fact]
    public async Task Variable_length_sequences_run_verify_and_give_zero_rows_past_each_query_length()
    {
        var (code, stdout, err) = await Run(["run", "--random", "--seq", "200", "--kv-seq", "260", "--dim", "8", "--heads", "2", "--batch", "3", "--seq-lengths", "200:260,17:100,0:5",
            "--causal", "--align", "bottom-right", "--block", "32", "--workers", "3", "--verify", "--out", PathOf("varlen.npy"), "--lse-out", PathOf("varlen-lse.npy")]);
        Assert.True(code == 0, err + stdout);
        Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);
        using var lse = NpyFile.Read(PathOf("varlen-lse.npy"));
        Assert.Equal([3, 2, 200], lse.Shape);
        Assert.True(float.IsFinite(lse.Data.Span[(1 * 2 * 200) + 16]), "row 16 of sequence 1 sees keys");
        Assert.Equal(float.NegativeInfinity, lse.Data.Span[(1 * 2 * 200) + 17]);
        Assert.Equal(float.NegativeInfinity, lse.Data.Span[2 * 2 * 200]);
    }

    [Fact]
    public async Task A_boolean_mask_per_batch_with_causal_and_gqa_runs_verifies_and_equals_the_library_bits()
    {
        // [B, 1, Nq, Nk] as numpy.save writes a PyTorch bool attn_mask: one byte per element, True = may attend.
        const int b = 2, h = 4, hk = 2, nq = 90, nk = 130;
        var (q, k, v) = TestData.Qkv(44, b, h, hk, nq, nk, 8, 8);
        var rng = new Random(45);
        var allowed = Enumerable.Range(0, b * nq * nk).Select(i => i % (nq * nk) / nk != 17 && rng.NextDouble() < 0.6).ToArray();
        string maskFile = WriteRaw("allowed.npy", "|b1", $"{b}, 1, {nq}, {nk}", [.. allowed.Select(x => (byte)(x ? 1 : 0))]);
        var (code, stdout, err) = await Run(["run", "--q", WriteF32("mq.npy", q, [b, h, nq, 8]), "--k", WriteF32("mk.npy", k, [b, hk, nk, 8]), "--v", WriteF32("mv.npy", v, [b, hk, nk, 8]),
            "--attn-mask", maskFile, "--causal", "bottom-right", "--block", "32", "--workers", "3", "--verify", "--out", PathOf("mo.npy"), "--lse-out", PathOf("mlse.npy")]);
        Assert.True(code == 0, err + stdout);
        Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);
        var options = new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32 };
        var expected = Attention.Compute(AttentionProblem.Create(q, k, v, options, AttentionMask.Boolean(allowed, b, 1, nq, nk)));
        using var output = NpyFile.Read(PathOf("mo.npy"));
        TestData.AssertBitwise(expected.Output.Data.Span, output.Data.Span, "mo.npy");
        using var lse = NpyFile.Read(PathOf("mlse.npy"));
        TestData.AssertBitwise(expected.Lse, lse.Data.Span, "mlse.npy");
        Assert.Equal(float.NegativeInfinity, lse.Data.Span[17]);
    }

    private string Offsets(string name, int[] offsets) => WriteRaw(name, "<i4", $"{offsets.Length},", [.. offsets.SelectMany(BitConverter.GetBytes)]);

    [Fact]
    public async Task Packed_varlen_inputs_with_cumulative_offsets_run_verify_and_come_back_packed()
    {
        // FlashAttention's packed layout: [total, H, D], sequence b in tokens [cu[b], cu[b + 1]).
        int[] cuQ = [0, 40, 41, 41, 131], cuK = [0, 60, 160, 170, 270];
        const int h = 4, hk = 2, d = 8;
        var rng = new Random(12);
        float[] Packed(int tokens, int heads) => [.. Enumerable.Range(0, tokens * heads * d).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        float[] q = Packed(cuQ[^1], h), k = Packed(cuK[^1], hk), v = Packed(cuK[^1], hk);
        NpyFile.Write(PathOf("pq.npy"), q, [cuQ[^1], h, d]);
        NpyFile.Write(PathOf("pk.npy"), k, [cuK[^1], hk, d]);
        NpyFile.Write(PathOf("pv.npy"), v, [cuK[^1], hk, d]);
        var (code, stdout, err) = await Run(["run", "--q", PathOf("pq.npy"), "--k", PathOf("pk.npy"), "--v", PathOf("pv.npy"), "--cu-seqlens-q", Offsets("cuq.npy", cuQ), "--cu-seqlens-k", Offsets("cuk.npy", cuK),
            "--causal", "--align", "bottom-right", "--block", "32", "--workers", "3", "--verify", "--out", PathOf("po.npy"), "--lse-out", PathOf("plse.npy")]);
        Assert.True(code == 0, err + stdout);
        Assert.Contains("bit for bit: yes", stdout, StringComparison.Ordinal);
        Assert.Contains("within the contract", stdout, StringComparison.Ordinal);

        var options = new AttentionOptions { Causal = true, Alignment = DiagonalAlignment.BottomRight, BlockSize = 32, SequenceLengths = VarlenBatch.Sequences(cuQ, cuQ[^1], cuK, cuK[^1]) };
        var expected = Attention.Compute(VarlenBatch.Pad("Q", q, h, d, cuQ), VarlenBatch.Pad("K", k, hk, d, cuK), VarlenBatch.Pad("V", v, hk, d, cuK), options);
        using var output = NpyFile.Read(PathOf("po.npy"));
        Assert.Equal([131, h, d], output.Shape);
        TestData.AssertBitwise(VarlenBatch.Unpad(expected.Output, cuQ), output.Data.Span, "packed output");
        using var lse = NpyFile.Read(PathOf("plse.npy"));
        Assert.Equal([h, 131], lse.Shape);
        Assert.Equal(expected.Lse[(((3 * h) + 1) * 90) + 89], lse.Data.Span[(1 * 131) + 41 + 89]);
        Assert.Equal(expected.Lse[(1 * h * 90) + (2 * 90)], lse.Data.Span[(2 * 131) + 40]);
    }

    public static TheoryData<string, string> BadInputs => new()
    {
        { "missing file", "no such file" },
        { "dtype", "dtype '<i4' is not supported" },
        { "fortran", "Fortran-order" },
        { "truncated", "truncated" },
        { "lying shape", "header says shape (30, 8)" },
        { "dim mismatch", "Q's dim 8 differs from K's dim 6" },
        { "kv length", "K has 30 keys but V has 29" },
        { "heads", "not a multiple of K/V's 2 heads" },
        { "nan", "is NaN" },
        { "negative key length", "key length -3 of batch 0" },
        { "long key length", "key length 31 of batch 0 is outside [0, 30]" },
        { "unknown option", "--frobnicate" },
        { "alibi slopes shape", "alibi.npy is [3]; Q's 2 heads need [2] or, per batch, [1, 2]" },
        { "alibi slopes nan", "slope [0, 1] is NaN" },
        { "alibi twice", "not both" },
        { "alignments disagree", "--causal top-left and --align bottom-right name different alignments" },
        { "window without alignment", "needs an explicit alignment" },
        { "sequence lengths", "sequence 1 of 31 queries and 2 keys is outside" },
        { "sequence lengths syntax", "--seq-lengths '30:30,7' must be q1:k1,q2:k2" },
        { "cu seqlens total", "cu_seqlens_k ends at 1, but the packed tensor holds 2 tokens" },
        { "cu seqlens dtype", "dtype '<f4' is not supported here; use int32 ('<i4') or int64 ('<i8')" },
        { "mask shape", "mask29.npy is [30, 29]; the scores are [1, 2, 30, 30], so the mask must be [30, 30] or [1 or 1, 1 or 2, 30, 30]" },
        { "mask nan", "mnan.npy[0, 1, 0, 3] is NaN; only finite values and −inf (may not attend) are allowed" },
        { "mask lowest", "mlow.npy[0, 0, 1, 0] is -3.4028235E+38; finite values must lie within ±1E+30: write −inf" },
        { "mask bool byte", "mbyte.npy: bool value [5] is the byte 2, neither 0 nor 1" },
        { "mask dtype", "dtype '<i4' is not supported; use float32 ('<f4') or float64 ('<f8'), or bool ('|b1') for a mask" },
        { "mask too large", "is 67,117,056 values, more than the 67,108,864 an explicit mask may have" },
        { "mask packed", "--attn-mask takes padded inputs" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task Bad_input_exits_2_with_one_line_naming_the_cause(string kind, string expected)
    {
        var (q, k, v) = TestData.Qkv(3, 1, 2, 2, 30, 30, 8, 8);
        string qf = WriteF32("q.npy", q, [2, 30, 8]);
        string kf = WriteF32("k.npy", k, [2, 30, 8]);
        string vf = WriteF32("v.npy", v, [2, 30, 8]);
        var f32 = q.Data.ToArray().Take(240).SelectMany(BitConverter.GetBytes).ToArray();
        string[] args = kind switch
        {
            "missing file" => ["run", "--q", PathOf("absent.npy"), "--k", kf, "--v", vf],
            "dtype" => ["run", "--q", WriteRaw("i.npy", "<i4", "30, 8", f32), "--k", kf, "--v", vf],
            "fortran" => ["run", "--q", WriteRaw("f.npy", "<f4", "30, 8", f32, fortran: true), "--k", kf, "--v", vf],
            "truncated" => ["run", "--q", WriteRaw("t.npy", "<f4", "30, 8", f32[..500]), "--k", kf, "--v", vf],
            "lying shape" => ["run", "--q", WriteRaw("l.npy", "<f4", "30, 8", [.. f32, .. f32]), "--k", kf, "--v", vf],
            "dim mismatch" => ["run", "--q", qf, "--k", WriteF32("k6.npy", TestData.Normal("K", 1, 1, 2, 30, 6), [2, 30, 6]), "--v", vf],
            "kv length" => ["run", "--q", qf, "--k", kf, "--v", WriteF32("v29.npy", TestData.Normal("V", 1, 1, 2, 29, 8), [2, 29, 8])],
            "heads" => ["run", "--q", WriteF32("q3.npy", TestData.Normal("Q", 1, 1, 3, 30, 8), [3, 30, 8]), "--k", kf, "--v", vf],
            "nan" => ["run", "--q", WriteRaw("n.npy", "<f4", "2, 30, 8", [.. f32, .. BitConverter.GetBytes(float.NaN), .. f32[4..]]), "--k", kf, "--v", vf],
            "negative key length" => ["run", "--q", qf, "--k", kf, "--v", vf, "--key-lengths", "-3"],
            "long key length" => ["run", "--q", qf, "--k", kf, "--v", vf, "--key-lengths", "31"],
            "alibi slopes shape" => ["run", "--q", qf, "--k", kf, "--v", vf, "--alibi-slopes", WriteRaw("alibi.npy", "<f4", "3,", [.. BitConverter.GetBytes(0.5f), .. BitConverter.GetBytes(0.25f), .. BitConverter.GetBytes(0.125f)])],
            "alibi slopes nan" => ["run", "--q", qf, "--k", kf, "--v", vf, "--alibi-slopes", WriteRaw("alibi-nan.npy", "<f4", "1, 2", [.. BitConverter.GetBytes(0.5f), .. BitConverter.GetBytes(float.NaN)])],
            "alibi twice" => ["run", "--q", qf, "--k", kf, "--v", vf, "--alibi", "--alibi-slopes", PathOf("alibi.npy")],
            "alignments disagree" => ["run", "--q", qf, "--k", kf, "--v", vf, "--causal", "top-left", "--align", "bottom-right"],
            "window without alignment" => ["run", "--random", "--seq", "40", "--kv-seq", "60", "--dim", "4", "--window", "8,2"],
            "cu seqlens total" => ["run", "--q", qf, "--k", kf, "--v", vf, "--cu-seqlens-q", Offsets("cq.npy", [0, 1, 2]), "--cu-seqlens-k", Offsets("ck.npy", [0, 1, 1])],
            "cu seqlens dtype" => ["run", "--q", qf, "--k", kf, "--v", vf, "--cu-seqlens-q", WriteRaw("cf.npy", "<f4", "2,", new byte[8]), "--cu-seqlens-k", Offsets("ck2.npy", [0, 30])],
            "mask shape" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mask29.npy", "|b1", "30, 29", new byte[30 * 29])],
            "mask nan" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mnan.npy", "<f4", "1, 2, 30, 30", [.. new byte[903 * 4], .. BitConverter.GetBytes(float.NaN), .. new byte[896 * 4]])],
            "mask lowest" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mlow.npy", "<f4", "30, 30", [.. new byte[30 * 4], .. BitConverter.GetBytes(float.MinValue), .. new byte[(900 - 31) * 4]])],
            "mask bool byte" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mbyte.npy", "|b1", "30, 30", [1, 1, 0, 0, 1, 2, .. new byte[894]])],
            "mask dtype" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mint.npy", "<i4", "30, 30", new byte[3600])],
            "mask too large" => ["run", "--q", qf, "--k", kf, "--v", vf, "--attn-mask", WriteRaw("mbig.npy", "|b1", "8192, 8193", [])],
            "mask packed" => ["run", "--q", qf, "--k", kf, "--v", vf, "--cu-seqlens-q", Offsets("cq2.npy", [0, 2]), "--cu-seqlens-k", Offsets("ck3.npy", [0, 2]), "--attn-mask", WriteRaw("mp.npy", "|b1", "30, 30", new byte[900])],
            "sequence lengths" => ["run", "--random", "--seq", "30", "--dim", "4", "--batch", "2", "--seq-lengths", "30:30,31:2"],
            "sequence lengths syntax" => ["run", "--random", "--seq", "30", "--dim", "4", "--batch", "2", "--seq-lengths", "30:30,7"],
            _ => ["run", "--random", "--seq", "8", "--dim", "4", "--frobnicate"],
        };
        var (code, stdout, stderr) = await Run(args);
        Assert.True(code == 2, $"{kind}: exit {code}; stderr: {stderr}; stdout: {stdout}");
        Assert.True(stderr.Contains(expected, StringComparison.Ordinal), $"{kind}: expected “{expected}” in stderr: {stderr}");
        Assert.Single(stderr.TrimEnd().Split('\n'));
    }

    [Fact]
    public async Task Nan_message_names_the_tensor_file_and_index()
    {
        var data = new float[2 * 30 * 8];
        data[(1 * 30 * 8) + (4 * 8) + 5] = float.NaN;
        NpyFile.Write(PathOf("q.npy"), data, [2, 30, 8]);
        var (_, k, v) = TestData.Qkv(3, 1, 2, 2, 30, 30, 8, 8);
        var (code, _, stderr) = await Run("run", "--q", PathOf("q.npy"), "--k", WriteF32("k.npy", k, [2, 30, 8]), "--v", WriteF32("v.npy", v, [2, 30, 8]));
        Assert.Equal(2, code);
        Assert.Contains("Q (q.npy)[0, 1, 4, 5] is NaN", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_dry_run_shows_the_plan_the_embedded_run_uses_and_with_nodes_a_clusters()
    {
        // K and V of a head (1 MiB) exceed the 512 KiB budget: the embedded pipeline cuts each head's
        // keys into ranges (its shards read views), a cluster's coordinator gives every shard whole
        // key ranges (its workers read their block stores), so the two plans differ.
        string[] job = ["run", "--random", "--seq", "4096", "--dim", "32", "--heads", "1", "--max-shard-bytes", "524288", "--workers", "2"];
        var (code, stdout, stderr) = await Run(job);
        Assert.True(code == 0, stderr);
        var ran = System.Text.RegularExpressions.Regex.Match(stdout, @"; (\d+) shards on the embedded pipeline");
        Assert.True(ran.Success, stdout);

        (code, var dry, stderr) = await Run([.. job, "--dry-run"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("dry run: the embedded pipeline's plan, the one this command runs", dry, StringComparison.Ordinal);
        Assert.Contains($"dry run: {ran.Groups[1].Value} shards on 2 workers, shard budget 512 KiB", dry, StringComparison.Ordinal);
        Assert.DoesNotContain("moved in all", dry, StringComparison.Ordinal);

        (code, var cluster, stderr) = await Run([.. job, "--dry-run", "--nodes", "1"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("dry run: a cluster coordinator's plan", cluster, StringComparison.Ordinal);
        Assert.Contains("dry run: on 1 worker node of 2 / 2 / 2 (min / median / max) threads", cluster, StringComparison.Ordinal);
        Assert.Contains("moved in all", cluster, StringComparison.Ordinal);
        Assert.DoesNotContain($"dry run: {ran.Groups[1].Value} shards on", cluster, StringComparison.Ordinal);

        // The cluster's options belong to a dry run: a real run refuses them rather than ignore them.
        (code, _, stderr) = await Run([.. job, "--nodes", "2"]);
        Assert.Equal(2, code);
        Assert.Contains("--nodes goes with --dry-run", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_decoding_steps_dry_run_plans_the_stacked_heads_that_run()
    {
        // 8 query heads over 2 K/V heads, one row each: each K/V head's 4 query heads run as one head of 4 rows.
        string[] step = ["run", "--random", "--seq", "1", "--kv-seq", "3000", "--dim", "16", "--heads", "8", "--kv-heads", "2", "--causal", "bottom-right"];
        var (code, stdout, stderr) = await Run([.. step, "--dry-run"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("Q[1, 8, 1, 16] planned as Q[1, 2, 4, 16]", stdout, StringComparison.Ordinal);
        Assert.Contains("rows per shard 4 / 4 / 4", stdout, StringComparison.Ordinal);

        // Two rows aligned bottom-right see different keys: stacked, each head's rows keep their diagonals.
        step[3] = "2";
        (code, stdout, stderr) = await Run([.. step, "--dry-run"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("Q[1, 8, 2, 16] planned as Q[1, 2, 8, 16]", stdout, StringComparison.Ordinal);
        Assert.Contains("rows per shard 8 / 8 / 8", stdout, StringComparison.Ordinal);

        // ALiBi's slopes belong to heads: those heads stay apart.
        (code, stdout, stderr) = await Run([.. step, "--alibi", "--dry-run"]);
        Assert.True(code == 0, stderr);
        Assert.DoesNotContain("planned as", stdout, StringComparison.Ordinal);
        Assert.Contains("rows per shard 2 / 2 / 2", stdout, StringComparison.Ordinal);
    }
}
