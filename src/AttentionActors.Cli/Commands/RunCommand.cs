using System.CommandLine;
using AttentionActors.Cli.Commands.Cluster;
using AttentionActors.Cluster.Client;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;

namespace AttentionActors.Cli.Commands;

/// <summary><c>attention run</c>: the main job, on the embedded pipeline.</summary>
internal static class RunCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("run", "Compute exact attention on the embedded actor pipeline, a single node (--single-node), or a running cluster (--cluster)");
        var read = AddOptions(command);
        command.SetAction(async (r, cancellationToken) => await RunJob.ExecuteAsync(read(r), stdout, stderr, cancellationToken));
        return command;
    }

    /// <summary>Adds the inputs and options of <c>attention run</c> to <paramref name="command"/>; returns how to read them back as a request.</summary>
    public static Func<ParseResult, RunRequest> AddOptions(Command command)
    {
        var q = new Option<string?>("--q") { Description = "Q .npy file: float32/float64, C order, [B,H,N,D], [H,N,D] or [N,D]" };
        var k = new Option<string?>("--k") { Description = "K .npy file (may have fewer heads than Q; Nk may differ from Nq)" };
        var v = new Option<string?>("--v") { Description = "V .npy file (same heads and length as K)" };
        var random = new Option<bool>("--random") { Description = "Generate Q, K, V uniformly in ±1.7 instead of reading files" };
        var seq = new Option<int?>("--seq") { Description = "Query length Nq (with --random)" };
        var kvSeq = new Option<int?>("--kv-seq") { Description = "Key length Nk (with --random) [Nq]" };
        var dim = new Option<int?>("--dim") { Description = "Head dim D (with --random)" };
        var heads = new Option<int>("--heads") { Description = "Query heads H (with --random)", DefaultValueFactory = _ => 8 };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "Key/value heads (with --random) [H]" };
        var batch = new Option<int>("--batch") { Description = "Batch B (with --random)", DefaultValueFactory = _ => 1 };
        var seed = new Option<int>("--seed") { Description = "Random seed (with --random)", DefaultValueFactory = _ => 0 };
        var causal = new Option<string?>("--causal") { Description = "Causal mask; may name the alignment (as --align)", Arity = ArgumentArity.ZeroOrOne };
        var align = new Option<string?>("--align") { Description = "Where the diagonal of causal masks, windows and ALiBi lies: top-left (PyTorch: i = j) or bottom-right (FlashAttention: i + Nk − Nq = j); required when Nq ≠ Nk" };
        var window = new Option<string?>("--window") { Description = "Sliding window L[,R] around the aligned diagonal (L alone: R = 0; −1 unbounded)" };
        var keyLengths = new Option<string?>("--key-lengths") { Description = "Per-batch valid key counts n1,n2,... (a padding mask, as PyTorch's key_padding_mask; the diagonal stays the tensors')" };
        var cuQ = new Option<string?>("--cu-seqlens-q") { Description = "Packed varlen inputs (FlashAttention's flash_attn_varlen_func): cumulative query offsets [B + 1] (.npy, int32 or int64); --q is then [total_q, H, D]" };
        var cuK = new Option<string?>("--cu-seqlens-k") { Description = "Cumulative key offsets [B + 1] of packed --k and --v [total_k, Hk, D]" };
        var seqLengths = new Option<string?>("--seq-lengths") { Description = "Variable-length sequences, one per batch entry, as FlashAttention's varlen API: q1:k1,q2:k2,... query rows and keys; rows past q_b are padding (output 0, lse −∞) and each sequence has its own diagonal" };
        var scale = new Option<float?>("--scale") { Description = "Dot-product scale [1/√D]" };
        var score = new Option<ScoreFunction>("--score") { Description = "Score function: dot, cosine, additive, gaussian", DefaultValueFactory = _ => ScoreFunction.Dot };
        var temperature = new Option<float>("--temperature") { Description = "Cosine temperature τ", DefaultValueFactory = _ => 1f };
        var sigma = new Option<float>("--sigma") { Description = "Gaussian bandwidth σ", DefaultValueFactory = _ => 1f };
        var additiveDim = new Option<int>("--additive-dim") { Description = "Additive attention dim d_a for random W_q, W_k, v", DefaultValueFactory = _ => 32 };
        var additiveFiles = new Option<string[]?>("--additive-weights") { Description = "Additive W_q [D,d_a], W_k [D,d_a], v [d_a] as three .npy files", AllowMultipleArgumentsPerToken = true };
        var alibi = new Option<bool>("--alibi") { Description = "ALiBi bias −slope_h·|i + D − j| around the aligned diagonal, with the ALiBi paper's slopes (2^(−8k/H), k = 1…H, for H a power of two)" };
        var alibiSlopes = new Option<string?>("--alibi-slopes") { Description = "ALiBi with the slopes of a .npy file: [H], or [B, H] per batch and head (FlashAttention's alibi_slopes)" };
        var attnMask = new Option<string?>("--attn-mask") { Description = "Explicit mask, as PyTorch's attn_mask: a .npy of bool (True = may attend) or float32/float64 values added to the logits (−inf: may not attend), [Nq, Nk] or [B|1, H|1, Nq, Nk]; at most 2^26 values" };
        var softcap = new Option<float?>("--softcap") { Description = "Logit soft-cap C: C·tanh(s/C)" };
        var workers = new Option<int>("--workers") { Description = "Worker actors (threads with --single-node), 1 to 16 per core [one per core]", DefaultValueFactory = _ => Environment.ProcessorCount };
        var block = new Option<int>("--block") { Description = "Keys per canonical block (multiple of 16)", DefaultValueFactory = _ => AttentionOptions.DefaultBlockSize };
        var output = new Option<string?>("--out") { Description = "Write the output .npy (float32): Q's leading dims + [Nq, Dv]" };
        var lseOut = new Option<string?>("--lse-out") { Description = "Write the log-sum-exp .npy (float32): Q's leading dims + [Nq]" };
        var verify = new Option<bool>("--verify") { Description = "Also compute single-node and the float64 reference; exit 1 outside the accuracy contract" };
        var quiet = new Option<bool>("--quiet") { Description = "No progress bar and no summary" };
        var singleNode = new Option<bool>("--single-node") { Description = "Compute on the single-node kernel (--workers threads) instead of the actor pipeline; same bits" };
        var maxShardBytes = new Option<long?>("--max-shard-bytes") { Description = "Largest shard (Q rows, K/V blocks and partials), in bytes [16 MiB; on a cluster its coordinator's Node:MaxShardBytes]" };
        var maxShards = new Option<int>("--max-shards") { Description = "Most shards the planner may cut (a plan that needs more to keep every shard within its budget is refused)", DefaultValueFactory = _ => new PlanOptions().MaxShards };
        var memoryLimit = new Option<string?>("--memory-limit") { Description = "Plan as if at most this much memory were available: bytes, or with a K, M or G suffix (powers of 1024) [what the machine has available]" };
        var audit = new Option<double>("--audit") { Description = "With --cluster: the fraction of shards (0 to 1) computed again on another worker node; any bit of difference fails the job naming both nodes" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan (shards, bytes per message, bytes moved, time per worker) without computing or loading the tensors" };
        var nodes = new Option<int?>("--nodes") { Description = "With --dry-run: plan for a cluster of this many worker nodes, the --workers threads spread over them, and print the bytes each fetches [without it or --cluster: the embedded pipeline's plan]" };
        var storeBytes = new Option<long?>("--block-store-bytes") { Description = "With --dry-run: plan for a cluster whose worker nodes each have a block store of this many bytes (Node:BlockStoreBytes) [4 GiB]" };
        var noMemoryCheck = new Option<bool>("--no-memory-check") { Description = "Run even when the job's estimated memory exceeds what is available" };
        foreach (var option in new Option[]
        {
            q, k, v, random, seq, kvSeq, dim, heads, kvHeads, batch, seed, causal, align, window, keyLengths, seqLengths, cuQ, cuK, scale, score, temperature, sigma,
            additiveDim, additiveFiles, alibi, alibiSlopes, attnMask, softcap, workers, block, output, lseOut, verify, quiet, singleNode, maxShardBytes, memoryLimit, noMemoryCheck, dryRun, nodes, storeBytes, maxShards, audit,
        })
        {
            command.Options.Add(option);
        }

        var cluster = ClusterFlags.Add(command, ClusterUse.Client);
        return r => new RunRequest
        {
            Q = r.GetValue(q),
            K = r.GetValue(k),
            V = r.GetValue(v),
            Random = r.GetValue(random),
            Seq = r.GetValue(seq),
            KvSeq = r.GetValue(kvSeq),
            Dim = r.GetValue(dim),
            Heads = r.GetValue(heads),
            KvHeads = r.GetValue(kvHeads),
            Batch = r.GetValue(batch),
            Seed = r.GetValue(seed),
            Causal = r.GetResult(causal) is not null,
            Alignment = r.GetValue(causal),
            Align = r.GetValue(align),
            Window = r.GetValue(window),
            KeyLengths = r.GetValue(keyLengths),
            SeqLengths = r.GetValue(seqLengths),
            CuSeqlensQ = r.GetValue(cuQ),
            CuSeqlensK = r.GetValue(cuK),
            Scale = r.GetValue(scale),
            Score = r.GetValue(score),
            Temperature = r.GetValue(temperature),
            Sigma = r.GetValue(sigma),
            AdditiveDim = r.GetValue(additiveDim),
            AdditiveFiles = r.GetValue(additiveFiles),
            Alibi = r.GetValue(alibi),
            AlibiSlopesFile = r.GetValue(alibiSlopes),
            AttnMaskFile = r.GetValue(attnMask),
            SoftCap = r.GetValue(softcap),
            Workers = r.GetValue(workers),
            Block = r.GetValue(block),
            Out = r.GetValue(output),
            LseOut = r.GetValue(lseOut),
            Verify = r.GetValue(verify),
            Quiet = r.GetValue(quiet),
            SingleNode = r.GetValue(singleNode),
            NoMemoryCheck = r.GetValue(noMemoryCheck),
            MaxShardBytes = r.GetValue(maxShardBytes),
            MemoryLimit = r.GetValue(memoryLimit),
            DryRun = r.GetValue(dryRun),
            Nodes = r.GetValue(nodes),
            BlockStoreBytes = r.GetValue(storeBytes),
            MaxShards = r.GetValue(maxShards),
            Audit = r.GetValue(audit),
            Cluster = () => cluster.Client(r),
        };
    }
}

/// <summary>Everything <c>attention run</c> was asked to do.</summary>
internal sealed record RunRequest
{
    public string? Q { get; init; }

    public string? K { get; init; }

    public string? V { get; init; }

    public bool Random { get; init; }

    public int? Seq { get; init; }

    public int? KvSeq { get; init; }

    public int? Dim { get; init; }

    public int Heads { get; init; } = 8;

    public int? KvHeads { get; init; }

    public int Batch { get; init; } = 1;

    public int Seed { get; init; }

    public bool Causal { get; init; }

    /// <summary>The alignment given with --causal, if any.</summary>
    public string? Alignment { get; init; }

    /// <summary>The alignment given with --align, if any.</summary>
    public string? Align { get; init; }

    public string? Window { get; init; }

    public string? KeyLengths { get; init; }

    public string? SeqLengths { get; init; }

    public string? CuSeqlensQ { get; init; }

    public string? CuSeqlensK { get; init; }

    public float? Scale { get; init; }

    public ScoreFunction Score { get; init; }

    public float Temperature { get; init; } = 1f;

    public float Sigma { get; init; } = 1f;

    public int AdditiveDim { get; init; } = 32;

    public string[]? AdditiveFiles { get; init; }

    public bool Alibi { get; init; }

    public string? AlibiSlopesFile { get; init; }

    /// <summary>--attn-mask: an explicit mask .npy (bool or additive float).</summary>
    public string? AttnMaskFile { get; init; }

    public float? SoftCap { get; init; }

    public int Workers { get; init; } = Environment.ProcessorCount;

    public int Block { get; init; } = AttentionOptions.DefaultBlockSize;

    public string? Out { get; init; }

    public string? LseOut { get; init; }

    public bool Verify { get; init; }

    public bool Quiet { get; init; }

    public bool SingleNode { get; init; }

    public bool NoMemoryCheck { get; init; }

    /// <summary>The shard budget asked for; null: 16 MiB embedded, the coordinator's own on a cluster.</summary>
    public long? MaxShardBytes { get; init; }

    public string? MemoryLimit { get; init; }

    public bool DryRun { get; init; }

    /// <summary>With a dry run: plan for a cluster of this many worker nodes, the workers spread over them.</summary>
    public int? Nodes { get; init; }

    /// <summary>With a dry run: plan for a cluster whose worker nodes each have a block store of this many bytes.</summary>
    public long? BlockStoreBytes { get; init; }

    public int MaxShards { get; init; } = new PlanOptions().MaxShards;

    /// <summary>With a cluster: the fraction of shards computed again on another node.</summary>
    public double Audit { get; init; }

    /// <summary>Reads the cluster client's settings when the job goes to a cluster (<c>--cluster</c>), else null: the job runs here. Throws <see cref="UsageException"/> for bad settings.</summary>
    public Func<ClusterClientOptions?> Cluster { get; init; } = () => null;

    /// <summary>What <c>attention inspect</c> adds; null for <c>attention run</c>.</summary>
    public InspectRequest? Inspect { get; init; }
}
