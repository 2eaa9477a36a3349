using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// FlashAttention's packed variable-length inputs for <c>attention run</c>: Q <c>[total_q, H, D]</c>,
/// K and V <c>[total_k, Hk, D]</c> and the offsets <c>--cu-seqlens-q</c>, <c>--cu-seqlens-k</c>
/// (<c>[B + 1]</c>, int32 or int64). They are padded to <c>[B, H, N, D]</c> with
/// <see cref="AttentionOptions.SequenceLengths"/> (<see cref="VarlenBatch"/>), and the output is
/// written packed again: <c>[total_q, H, Dv]</c>, the lse <c>[H, total_q]</c> as FlashAttention returns it.
/// </summary>
internal sealed class PackedInputs
{
    private PackedInputs(int[] cuQ, int[] cuK, TensorShape q, TensorShape k, TensorShape v, SequenceLength[] sequences)
    {
        CuQ = cuQ;
        CuK = cuK;
        Q = q;
        K = k;
        V = v;
        Sequences = sequences;
    }

    public int[] CuQ { get; }

    public int[] CuK { get; }

    /// <summary>The padded shapes.</summary>
    public TensorShape Q { get; }

    public TensorShape K { get; }

    public TensorShape V { get; }

    public SequenceLength[] Sequences { get; }

    public int TotalQ => CuQ[^1];

    /// <summary>Checks the flags, the offsets and the three files' headers; null when the inputs are not packed.</summary>
    public static PackedInputs? Check(RunRequest r)
    {
        if (r.CuSeqlensQ is null && r.CuSeqlensK is null)
        {
            return null;
        }

        if (r.CuSeqlensQ is null || r.CuSeqlensK is null)
        {
            throw new UsageException("--cu-seqlens-q and --cu-seqlens-k go together: the packed batch's query and key offsets");
        }

        if (r.Random || r.Q is null || r.K is null || r.V is null)
        {
            throw new UsageException("--cu-seqlens-q/-k describe packed --q, --k and --v files [total, H, D]");
        }

        if (r.SeqLengths is not null || r.KeyLengths is not null)
        {
            throw new UsageException("--cu-seqlens-q/-k give the sequence lengths; leave out --seq-lengths and --key-lengths");
        }

        if (r.Inspect is not null)
        {
            throw new UsageException("inspect takes padded inputs: pad the packed batch, and pass --seq-lengths");
        }

        int[] cuQ = NpyFile.ReadIntegers(Existing("--cu-seqlens-q", r.CuSeqlensQ)), cuK = NpyFile.ReadIntegers(Existing("--cu-seqlens-k", r.CuSeqlensK));
        var files = new[] { ("Q", r.Q), ("K", r.K), ("V", r.V) }.Select(f => (f.Item1, f.Item2, NpyFile.Inspect(f.Item2).Shape)).ToArray();
        foreach (var (name, path, shape) in files)
        {
            if (shape is not [_, > 0, > 0])
            {
                throw new UsageException($"{name} ({path}) is {RunInputs.Show(shape)}; packed inputs are [total, H, D]");
            }
        }

        try
        {
            var sequences = VarlenBatch.Sequences(cuQ, files[0].Shape[0], cuK, files[1].Shape[0]);
            if (files[2].Shape[0] != files[1].Shape[0])
            {
                throw new UsageException($"K ({r.K}) holds {files[1].Shape[0]} tokens but V ({r.V}) {files[2].Shape[0]}");
            }

            int b = sequences.Length, nq = sequences.Max(s => s.Query), nk = sequences.Max(s => s.Key);
            return new PackedInputs(
                cuQ,
                cuK,
                new TensorShape("Q", b, files[0].Shape[1], nq, files[0].Shape[2]),
                new TensorShape("K", b, files[1].Shape[1], nk, files[1].Shape[2]),
                new TensorShape("V", b, files[2].Shape[1], nk, files[2].Shape[2]),
                sequences);
        }
        catch (AttentionInputException ex)
        {
            throw new UsageException($"--cu-seqlens-q {r.CuSeqlensQ}, --cu-seqlens-k {r.CuSeqlensK}: {ex.Message}");
        }
    }

    /// <summary>The three files, padded.</summary>
    public RunInputs Load(RunRequest r)
    {
        AttentionTensor Padded(string name, string path, TensorShape shape, int[] cu)
        {
            using var file = NpyFile.Read(path);
            var padded = VarlenBatch.Pad(name, file.Data.Span, shape.Heads, shape.Dim, cu);
            return padded.Seq == shape.Seq ? padded : throw new UsageException($"{name} ({path}) changed while it was read");
        }

        return new RunInputs
        {
            Q = Padded("Q", r.Q!, Q, CuQ),
            K = Padded("K", r.K!, K, CuK),
            V = Padded("V", r.V!, V, CuK),
            Leading = [Q.Batch, Q.Heads],
        };
    }

    /// <summary>The output packed again: [total_q, H, Dv].</summary>
    public (float[] Data, int[] Shape) Output(AttentionTensor output) => (VarlenBatch.Unpad(output, CuQ), [TotalQ, Q.Heads, V.Dim]);

    /// <summary>The lse [B, H, N] as FlashAttention's softmax_lse of a varlen call: [H, total_q].</summary>
    public (float[] Data, int[] Shape) Lse(float[] lse)
    {
        var packed = new float[(long)Q.Heads * TotalQ];
        for (int b = 0; b < Sequences.Length; b++)
        {
            for (int h = 0; h < Q.Heads; h++)
            {
                lse.AsSpan((int)((((long)b * Q.Heads) + h) * Q.Seq), Sequences[b].Query).CopyTo(packed.AsSpan((h * TotalQ) + CuQ[b]));
            }
        }

        return (packed, [Q.Heads, TotalQ]);
    }

    private static string Existing(string option, string path) => File.Exists(path) ? path : throw new UsageException($"{option} {path} does not exist");
}
