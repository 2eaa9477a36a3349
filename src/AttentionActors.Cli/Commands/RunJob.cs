using System.Diagnostics;
using System.Globalization;
using AttentionActors.Cli.Logging;
using AttentionActors.Cli.Npy;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Client;
using AttentionActors.Pipeline.Planning;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace AttentionActors.Cli.Commands;

/// <summary>Runs one <c>attention run</c> request; returns the exit code (0 ok, 1 compute failure, 2 bad input).</summary>
internal static class RunJob
{
    public static async Task<int> ExecuteAsync(RunRequest request, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var outputs = new List<OutputFile>();
        Task<ILoggerFactory>? consoleLogging = null;
        int code = 0;
        try
        {
            // A dry run plans for any cluster (64 nodes of 16 cores, say); a real run is bounded by this machine.
            if (request.Workers < 1 || request.Workers > (request.DryRun ? 1 << 16 : PipelineOptions.MaxWorkers))
            {
                throw new UsageException($"--workers {request.Workers} must be between 1 and {PipelineOptions.MaxWorkers} on this {Environment.ProcessorCount}-core machine (16 per core, at least 64); workers beyond the core count add shards, not speed");
            }

            // Everything that can be checked without computing is checked first: the output paths,
            // then the shapes and options, then the memory the job needs — before anything is allocated.
            var outPath = request.Out is { } o ? OutputFile.Check("--out", o) : null;
            var lsePath = request.LseOut is { } l ? OutputFile.Check("--lse-out", l) : null;
            var packed = PackedInputs.Check(request);
            var (qShape, kShape, vShape, leading, inputHeap) = packed is null ? Shapes(request)
                : (packed.Q, packed.K, packed.V, [packed.Q.Batch, packed.Q.Heads], 4 * (packed.Q.Length + packed.K.Length + packed.V.Length));
            var options = BuildOptions(request, qShape) with { SequenceLengths = packed?.Sequences ?? (request.SeqLengths is { } sequences ? SequenceLengths(sequences) : null) };
            var geometry = AttentionGeometry.Create(qShape, kShape, vShape, options);
            var mask = request.AttnMaskFile is { } maskFile ? LoadMask(maskFile, geometry, packed is not null) : null;
            geometry = geometry.WithMask(mask?.Shape);
            inputHeap += mask is null ? 0 : 4 * mask.Data.Length;
            var inspect = request.Inspect is { } asked ? InspectStep.Check(asked, geometry) : null;
            CheckLarge(request, qShape, kShape, vShape, (long)qShape.Batch * qShape.Heads * qShape.Seq * geometry.ValueDim, outPath, packed is not null);
            if (request.MaxShardBytes is < 64 << 10)
            {
                throw new UsageException($"--max-shard-bytes {request.MaxShardBytes} must be at least 65536 (64 KiB)");
            }

            if (!request.DryRun && (request.Nodes is not null || request.BlockStoreBytes is not null))
            {
                throw new UsageException($"{(request.Nodes is not null ? "--nodes" : "--block-store-bytes")} goes with --dry-run: it describes the cluster a dry run plans for");
            }

            if (request.MaxShards < 1 || request.MaxShards > PlanOptions.ShardsCeiling)
            {
                throw new UsageException($"--max-shards {request.MaxShards} must be between 1 and {PlanOptions.ShardsCeiling:N0}");
            }

            var pipeline = new PipelineOptions { Workers = request.Workers, Plan = new PlanOptions { MaxShardBytes = request.MaxShardBytes ?? new PlanOptions().MaxShardBytes, MaxShards = request.MaxShards } };
            var clusterOptions = ClusterOptionsOf(request);
            // An actor system takes a few hundred milliseconds to start, and its console logging tens:
            // both start while the job is estimated and its inputs load and are checked (the runner
            // does not wait for the logging either: it gets loggers that forward to it when it is
            // ready), and are stopped again if any of that fails.
            if (!request.DryRun && ReferenceEquals(stderr, Console.Error))
            {
                consoleLogging = Task.Run<ILoggerFactory>(() =>
                {
                    var factory = LoggerFactory.Create(b => b
                        .SetMinimumLevel(request.Quiet ? LogLevel.Error : LogLevel.Warning)
                        .AddSimpleConsole(c => c.SingleLine = true)
                        .AddFilter((_, _, level) => level >= LogLevel.Warning));
                    if (!request.SingleNode)
                    {
                        // Stopping an actor system cancels Akka's scheduler timer, and .NET gives that
                        // cancellation a stack trace with file information: the first one loads and
                        // compiles the symbol reader (21-25 ms in a small program). Done here, beside
                        // the actor system's start, it is off the end of the run.
                        _ = new System.Diagnostics.StackTrace(fNeedFileInfo: true);
                    }

                    return factory;
                });
            }

            var loggers = consoleLogging is null ? null : new PendingLoggerFactory(consoleLogging);
            var starting = request.DryRun ? null : Task.Run<IAttentionRunner>(async () =>
            {
                return request.SingleNode ? new SingleNodeRunner(request.Workers)
                    : clusterOptions is not null ? await ClusterClient.ConnectAsync(clusterOptions, loggers, cancellationToken)
                    : EmbeddedPipeline.Start(pipeline with { LoggerFactory = loggers });
            });
            // The kernel speed probe (compiling the kernels, then timing them: tens of milliseconds).
            // On a single node it runs beside the memory check and the loading of the inputs, and
            // only the time estimate waits for it. Beside an actor system's start it made three
            // busy threads on two cores and the job started later (1.53 s against 1.46 s at N 8192,
            // medians of eight): there this thread runs it, then loads the inputs.
            // A decoding step with grouped K/V heads runs stacked, one head per K/V head: that is the job planned.
            var planned = KeyGroupStacking.Stack(geometry) ?? geometry;
            Task<double> speed;
            JobEstimate estimate;
            try
            {
                speed = request.SingleNode
                    ? Task.Run(() => JobEstimate.MeasureSpeed(geometry), CancellationToken.None)
                    : Task.FromResult(JobEstimate.MeasureSpeed(geometry));
                estimate = JobEstimate.For(geometry, inputHeap, outPath is not null && !request.SingleNode && packed is null, request.Workers, pipeline.Plan.MaxShardBytes, request.Verify, ParseBytes("--memory-limit", request.MemoryLimit));
                if (!estimate.Fits && !request.NoMemoryCheck)
                {
                    throw new UsageException($"this job needs about {JobEstimate.Size(estimate.NeededBytes)} of memory ({estimate.DescribeNeed()}) but {JobEstimate.Size(estimate.AvailableBytes)} is available and a job may plan on {JobEstimate.UsableShare:P0} of it; make it smaller, write a large output with --out (memory-mapped), or pass --no-memory-check to run anyway");
                }

                // The embedded pipeline's plan depends on the shapes and options alone: a plan it
                // would refuse (more shards than --max-shards) is refused before the inputs load.
                // (A cluster's coordinator plans with its own settings, when the job reaches it.)
                if (!request.DryRun && !request.SingleNode && clusterOptions is null)
                {
                    _ = EmbeddedPipeline.Plan(planned, fromCache: false, pipeline);
                }
            }
            catch when (starting is not null)
            {
                await StopAsync(starting);
                throw;
            }

            // A dry run, the one request that starts no runner.
            if (starting is null)
            {
                if (request.Nodes is < 1 || request.Nodes > request.Workers || request.BlockStoreBytes is < 0)
                {
                    throw new UsageException($"--nodes {request.Nodes} must be between 1 and --workers ({request.Workers}), and --block-store-bytes {request.BlockStoreBytes} at least 0");
                }

                if (!ReferenceEquals(planned, geometry))
                {
                    stdout.WriteLine($"dry run: the {geometry.GroupSize} query heads of each K/V head run as one head of {planned.QuerySeq} rows (a decoding step; the same bits): {geometry.QueryShape} planned as {planned.QueryShape}");
                }

                // The plan of the runner this command would start: a cluster's (--cluster, or --nodes
                // to plan for one) or the embedded pipeline's, whose shards read in-process views.
                bool asCluster = clusterOptions is not null || request.Nodes is not null || request.BlockStoreBytes is not null;
                var plan = asCluster ? DryRun.ClusterPlan(planned, pipeline.Workers, pipeline.Plan) : EmbeddedPipeline.Plan(planned, fromCache: false, pipeline);
                var on = asCluster ? new DryRun.Cluster(request.Nodes ?? 1, request.BlockStoreBytes ?? new AttentionActors.Cluster.Node.NodeOptions().BlockStoreBytes) : null;
                return DryRun.Print(planned, plan, estimate.WithSpeed(await speed), pipeline.Workers, pipeline.Plan.MaxShardBytes, on, request.SingleNode, stdout);
            }

            var (inputs, problem) = await LoadAsync(request, packed, geometry, mask, starting);
            using var owned = inputs;
            estimate = estimate.WithSpeed(await speed);
            if (!request.Quiet && estimate.Time > TimeSpan.FromMinutes(10))
            {
                stderr.WriteLine($"attention: this job is {estimate.Flops / 1e12:G3} TFLOP, about {JobEstimate.Duration(estimate.Time)} on {estimate.Threads} {(estimate.Threads == 1 ? "core" : "cores")} here (Ctrl-C cancels)");
            }
            int[] outShape = [.. leading, problem.QuerySeq, problem.ValueDim];
            await using IAttentionRunner runner = await starting;
            var clock = Stopwatch.StartNew();

            // The output streams into a memory-mapped file as rows finish; packed inputs are unpacked afterwards instead.
            var mapped = outPath is null || packed is not null ? null : OutputFile.Create(outPath, outShape);
            if (mapped is not null)
            {
                outputs.Add(mapped);
            }

            JobProgress? last = null;
            var result = await WithProgress(request, stderr, estimate.Time, p => last = p, (progress, ct) => runner.ComputeAsync(problem, mapped?.Tensor(problem.Batch, problem.Heads, problem.QuerySeq, problem.ValueDim), progress, ct), cancellationToken);
            var elapsed = clock.Elapsed;
            InspectPasses? passes = null;
            if (inspect is not null)
            {
                var passClock = Stopwatch.StartNew();
                var coverage = inspect.WantsCoverage ? await runner.CoverageAsync(problem, result.Lse, null, cancellationToken) : null;
                var weights = new Dictionary<WeightsWindow, float[]>();
                foreach (var window in inspect.WeightWindows)
                {
                    weights[window] = await runner.WeightsAsync(problem, result.Lse, window, null, cancellationToken);
                }

                passes = new InspectPasses(coverage, weights, passClock.Elapsed, runner.Where);
            }

            if (packed is not null)
            {
                // Packed in, packed out: [total_q, H, Dv] and FlashAttention's lse layout [H, total_q].
                if (outPath is not null)
                {
                    var (data, shape) = packed.Output(result.Output);
                    outputs.Add(OutputFile.Write(outPath, data, shape));
                }

                if (lsePath is not null)
                {
                    var (data, shape) = packed.Lse(result.Lse);
                    outputs.Add(OutputFile.Write(lsePath, data, shape));
                }
            }
            else if (lsePath is not null)
            {
                outputs.Add(OutputFile.Write(lsePath, result.Lse, [.. leading, problem.QuerySeq]));
            }

            if (!request.Quiet)
            {
                string how = last is { ShardsTotal: > 0 } p ? $"{Count(p.ShardsTotal, "shard")} on {runner.Where}" : $"on {runner.Where}";
                double flops = last?.FlopsTotal is > 0 and var total ? total : estimate.Flops;
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"attention: Q {RunInputs.Show(inputs.Q.Shape)}, K/V {RunInputs.Show(inputs.K.Shape)} → out {RunInputs.Show(outShape)}; {how}; {elapsed.TotalSeconds:F3} s (estimated {JobEstimate.Duration(estimate.Time)}), {flops / 1e9:G4} GFLOP visible, {flops / 1e9 / Math.Max(elapsed.TotalSeconds, 1e-9):F1} GFLOP/s"));
            }

            inspect?.Run(problem, result, passes!, leading, outputs, stdout, request.Quiet);
            if (request.Verify)
            {
                // The other way of computing it: single node for a sharded result, the embedded pipeline for a single-node one.
                await using IAttentionRunner other = request.SingleNode ? EmbeddedPipeline.Start(pipeline with { LoggerFactory = null }) : new SingleNodeRunner(request.Workers);
                code = await Verifier.CheckAsync(problem, result, runner.Where, other, stdout, cancellationToken);
            }

            // The result may live in a mapped output file: it is released only now, then every file is put in place.
            foreach (var file in outputs)
            {
                file.Commit();
            }

            return code;
        }
        catch (Exception ex) when (ex is UsageException or AttentionInputException or NpyFormatException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"attention: {OneLine(ex.Message)}");
            return 2;
        }
        catch (OperationCanceledException ex)
        {
            // Ctrl-C here, or the job cancelled elsewhere (an operator): the latter says by whom.
            stderr.WriteLine(cancellationToken.IsCancellationRequested ? "attention: cancelled" : $"attention: {OneLine(ex.Message)}");
            return 1;
        }
        catch (AttentionJobException ex)
        {
            stderr.WriteLine($"attention: job failed: {OneLine(ex.Message)}");
            return 1;
        }
        catch (CertificateFileException ex)
        {
            stderr.WriteLine($"attention: {OneLine(ex.Message)}");
            return 2;
        }
        catch (ClusterUnreachableException ex)
        {
            stderr.WriteLine($"attention: {OneLine(ex.Message)}");
            return 1;
        }
        finally
        {
            // Files not committed (a failed or cancelled job) are removed: never a partial output.
            outputs.ForEach(f => f.Dispose());

            if (consoleLogging is not null)
            {
                (await consoleLogging).Dispose();
            }
        }
    }

    /// <summary>The cluster client's settings when the job goes to a cluster (<c>--cluster</c>), else null, with this job's own (--audit, --max-shard-bytes).</summary>
    internal static ClusterClientOptions? ClusterOptionsOf(RunRequest request)
    {
        if (request.Cluster() is not { } options)
        {
            if (request.Audit != 0)
            {
                throw new UsageException("--audit needs --cluster: it is about a cluster's workers");
            }

            return null;
        }

        if (request.SingleNode)
        {
            throw new UsageException("give --cluster or --single-node, not both");
        }

        if (request.Audit is < 0 or > 1 || double.IsNaN(request.Audit))
        {
            throw new UsageException($"--audit {request.Audit} must be a fraction between 0 and 1");
        }

        return options with { Audit = request.Audit, MaxShardBytes = request.MaxShardBytes ?? 0 };
    }

    /// <summary>Bytes from "123", "512M", "4G", "64k" (powers of 1024); null when not given.</summary>
    internal static long? ParseBytes(string option, string? text)
    {
        if (text is null)
        {
            return null;
        }

        string t = text.Trim();
        int shift = t.Length == 0 ? 0 : char.ToUpperInvariant(t[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 };
        string digits = shift == 0 ? t : t[..^1];
        if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long value) || value <= 0 || value > long.MaxValue >> shift)
        {
            throw new UsageException($"{option} '{text}' must be a positive number of bytes, optionally with a K, M or G suffix");
        }

        return value << shift;
    }

    private static string Count(int n, string noun) => $"{n} {noun}{(n == 1 ? "" : "s")}";

    /// <summary>Q, K and V shapes before anything is loaded or generated, Q's leading dims, and the bytes the inputs will take in memory.</summary>
    private static (TensorShape Q, TensorShape K, TensorShape V, int[] Leading, long HeapBytes) Shapes(RunRequest r)
    {
        CheckInputChoice(r);
        if (!r.Random)
        {
            return RunInputs.InspectFiles(r.Q!, r.K!, r.V!);
        }

        var (seq, kvSeq, dim, kvHeads) = RandomShape(r);
        var q = new TensorShape("Q", r.Batch, r.Heads, seq, dim);
        var k = new TensorShape("K", r.Batch, kvHeads, kvSeq, dim);
        var v = new TensorShape("V", r.Batch, kvHeads, kvSeq, dim);
        return (q, k, v, [r.Batch, r.Heads], 4 * (q.Length + k.Length + v.Length));
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    /// <summary>
    /// A tensor of more values than one array holds is read from a float32 .npy file in segments and
    /// reaches only the shards' row ranges: the ways of running that need it whole are refused first.
    /// </summary>
    private static void CheckLarge(RunRequest r, TensorShape q, TensorShape k, TensorShape v, long outValues, string? outPath, bool packed)
    {
        var large = new[] { (q.Name, q.Length), (k.Name, k.Length), (v.Name, v.Length), ("the output", outValues) }.Where(t => t.Item2 > Array.MaxLength).ToArray();
        if (large.Length == 0 || r.DryRun)
        {
            return;
        }

        string what = $"{large[0].Item1} holds {large[0].Item2:N0} values, more than one array ({Array.MaxLength:N0})";
        string? refusal = r.SingleNode ? "--single-node computes on whole arrays; run it on the embedded pipeline (the default) or a cluster, which read it in segments"
            : r.Verify ? "--verify recomputes it on a single node, which holds whole arrays; check a smaller job of the same shape instead"
            : r.Random ? "--random makes arrays; give float32 .npy files (--q/--k/--v), which are memory-mapped in segments"
            : packed ? "packed (--cu-seqlens) inputs are unpacked into arrays; pad them into [B, H, N, D] files"
            : outValues > Array.MaxLength && outPath is null ? "write the output to a file with --out, which is memory-mapped in segments"
            : null;
        if (refusal is not null)
        {
            throw new UsageException($"{what}: {refusal}");
        }
    }

    private static void CheckInputChoice(RunRequest r)
    {
        bool files = r.Q is not null || r.K is not null || r.V is not null;
        if (files && r.Random)
        {
            throw new UsageException("give either --q/--k/--v or --random, not both");
        }

        if (files && (r.Q is null || r.K is null || r.V is null))
        {
            throw new UsageException($"missing {string.Join(" and ", new[] { ("--q", r.Q), ("--k", r.K), ("--v", r.V) }.Where(x => x.Item2 is null).Select(x => x.Item1))}: --q, --k and --v go together");
        }

        if (!files && !r.Random)
        {
            throw new UsageException("no input: give --q FILE --k FILE --v FILE, or --random --seq N --dim D");
        }
    }

    internal static (int Seq, int KvSeq, int Dim, int KvHeads) RandomShape(RunRequest r)
    {
        if (r.Seq is not { } seq || r.Dim is not { } dim)
        {
            throw new UsageException("--random needs --seq N and --dim D");
        }

        int kvSeq = r.KvSeq ?? seq;
        int kvHeads = r.KvHeads ?? r.Heads;
        foreach (var (name, value, min) in new[] { ("--seq", seq, 0), ("--kv-seq", kvSeq, 0), ("--dim", dim, 1), ("--heads", r.Heads, 1), ("--kv-heads", kvHeads, 1), ("--batch", r.Batch, 1) })
        {
            if (value < min)
            {
                throw new UsageException($"{name} {value} must be at least {min}");
            }
        }

        // A dry run allocates nothing, so it may plan jobs larger than one process could hold. Q and
        // K/V are counted apart: a decoding step's cache of a million keys over few K/V heads fits
        // where as many keys on every query head would not.
        foreach (var (tensor, elements) in new[] { ("Q", (long)r.Batch * r.Heads * seq * dim), ("K and V (each)", (long)r.Batch * kvHeads * kvSeq * dim) })
        {
            if (!r.DryRun && elements > Array.MaxLength)
            {
                throw new UsageException($"--random {tensor}: {elements:N0} elements, more than one tensor may hold ({Array.MaxLength:N0})");
            }
        }

        return (seq, kvSeq, dim, kvHeads);
    }

    /// <summary>The job's inputs and checked problem; when they fail, the runner started beside them is stopped before the failure is reported.</summary>
    private static async Task<(RunInputs Inputs, AttentionProblem Problem)> LoadAsync(RunRequest request, PackedInputs? packed, AttentionGeometry geometry, AttentionMask? mask, Task<IAttentionRunner> starting)
    {
        RunInputs? inputs = null;
        try
        {
            inputs = packed?.Load(request) ?? LoadInputs(request);
            return (inputs, AttentionProblem.Create(geometry, inputs.Q, inputs.K, inputs.V, mask));
        }
        catch
        {
            inputs?.Dispose();
            await StopAsync(starting);
            throw;
        }
    }

    /// <summary>Stops a runner started beside a step that failed: that failure is the one to report, and a runner that failed to start has nothing to stop.</summary>
    internal static async Task StopAsync(Task<IAttentionRunner> starting)
    {
        try
        {
            await (await starting).DisposeAsync();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
        }
    }

    private static RunInputs LoadInputs(RunRequest r)
    {
        if (!r.Random)
        {
            return RunInputs.FromFiles(r.Q!, r.K!, r.V!);
        }

        var (seq, kvSeq, dim, kvHeads) = RandomShape(r);
        return RunInputs.Random(r.Batch, r.Heads, kvHeads, seq, kvSeq, dim, r.Seed);
    }

    private static AttentionOptions BuildOptions(RunRequest r, TensorShape q)
    {
        if (r.Align is not null && r.Alignment is not null && r.Align != r.Alignment)
        {
            throw new UsageException($"--causal {r.Alignment} and --align {r.Align} name different alignments");
        }

        DiagonalAlignment? alignment = (r.Align ?? r.Alignment) switch
        {
            null => null,
            "top-left" => DiagonalAlignment.TopLeft,
            "bottom-right" => DiagonalAlignment.BottomRight,
            var other => throw new UsageException($"{(r.Align is null ? "--causal" : "--align")} '{other}' must be top-left or bottom-right"),
        };
        if (r.Alibi && r.AlibiSlopesFile is not null)
        {
            throw new UsageException("give --alibi (the paper's slopes) or --alibi-slopes FILE, not both");
        }
        (int, int)? window = null;
        if (r.Window is { } w)
        {
            var sides = RunInputs.ParseList("--window", w);
            window = sides.Length switch
            {
                1 => (sides[0], 0),
                2 => (sides[0], sides[1]),
                _ => throw new UsageException($"--window '{w}' must be L or L,R"),
            };
        }

        return new AttentionOptions
        {
            Score = r.Score,
            Scale = r.Scale,
            Temperature = r.Temperature,
            Sigma = r.Sigma,
            Additive = r.Score == ScoreFunction.Additive ? Additive(r, q.Dim) : null,
            SoftCap = r.SoftCap,
            AlibiSlopes = r.AlibiSlopesFile is { } slopes ? AlibiSlopes(slopes, q) : r.Alibi ? AttentionOptions.DefaultAlibiSlopes(q.Heads) : null,
            Causal = r.Causal,
            Alignment = alignment,
            Window = window,
            KeyLengths = r.KeyLengths is { } lengths ? RunInputs.ParseList("--key-lengths", lengths) : null,
            BlockSize = r.Block,

            // inspect reports every row's entropy: it rides in the online softmax, not a second pass.
            Entropy = r.Inspect is not null,
        };
    }

    /// <summary>Parses "q1:k1,q2:k2,…" (query rows and keys of each sequence).</summary>
    private static SequenceLength[] SequenceLengths(string text)
    {
        var sequences = new List<SequenceLength>();
        foreach (string part in text.Split(','))
        {
            var sides = part.Split(':');
            if (sides.Length != 2
                || !int.TryParse(sides[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int queries)
                || !int.TryParse(sides[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int keys))
            {
                throw new UsageException($"--seq-lengths '{text}' must be q1:k1,q2:k2,… (query rows and keys of each batch entry); '{part}' is not");
            }

            sequences.Add(new SequenceLength(queries, keys));
        }

        return [.. sequences];
    }

    /// <summary>
    /// An explicit mask from a .npy file (bool: True = may attend; or additive float), [Nq, Nk] or
    /// [B|1, H|1, Nq, Nk], every value checked; errors name the file.
    /// </summary>
    private static AttentionMask LoadMask(string path, AttentionGeometry g, bool packed)
    {
        if (packed)
        {
            throw new UsageException("--attn-mask takes padded inputs: with --cu-seqlens-q/-k there are no [Nq, Nk] positions to mask; pad the batch and pass --seq-lengths");
        }

        if (!File.Exists(path))
        {
            throw new UsageException($"--attn-mask {path} does not exist");
        }

        var (shape, values, _) = NpyFile.ReadMask(path, AttentionMask.MaxElements);
        var (mb, mh) = shape switch
        {
            [var nq, var nk] when nq == g.QuerySeq && nk == g.KeySeq => (1, 1),
            [var b, var h, var nq, var nk] when nq == g.QuerySeq && nk == g.KeySeq && (b == 1 || b == g.Batch) && (h == 1 || h == g.Heads) => (b, h),
            _ => throw new UsageException($"--attn-mask {path} is {RunInputs.Show(shape)}; the scores are [{g.Batch}, {g.Heads}, {g.QuerySeq}, {g.KeySeq}], so the mask must be [{g.QuerySeq}, {g.KeySeq}] or [1 or {g.Batch}, 1 or {g.Heads}, {g.QuerySeq}, {g.KeySeq}]"),
        };
        try
        {
            return AttentionMask.Additive(values, mb, mh, g.QuerySeq, g.KeySeq, path);
        }
        catch (AttentionInputException ex)
        {
            throw new UsageException($"--attn-mask {ex.Message}");
        }
    }

    /// <summary>ALiBi slopes from a .npy file: [H] or [B, H] (one per batch and query head), every one finite.</summary>
    private static float[] AlibiSlopes(string path, TensorShape q)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"--alibi-slopes {path} does not exist");
        }

        using var file = NpyFile.Read(path);
        bool perHead = file.Shape is [var h] && h == q.Heads;
        bool perBatch = file.Shape is [var b, var hb] && b == q.Batch && hb == q.Heads;
        if (!perHead && !perBatch)
        {
            throw new UsageException($"--alibi-slopes {path} is {RunInputs.Show(file.Shape)}; Q's {q.Heads} heads need [{q.Heads}] or, per batch, [{q.Batch}, {q.Heads}]");
        }

        var slopes = file.Data.ToArray();
        int bad = Array.FindIndex(slopes, x => !float.IsFinite(x));
        if (bad >= 0)
        {
            string at = perHead ? $"[{bad}]" : $"[{bad / q.Heads}, {bad % q.Heads}]";
            throw new UsageException($"--alibi-slopes {path}: slope {at} is {slopes[bad]}; slopes must be finite");
        }

        return slopes;
    }

    private static AdditiveParameters Additive(RunRequest r, int dk)
    {
        if (r.AdditiveFiles is { Length: > 0 } files)
        {
            if (files.Length != 3)
            {
                throw new UsageException($"--additive-weights needs three files (W_q, W_k, v), got {files.Length}");
            }

            float[] Load(string path)
            {
                using var f = NpyFile.Read(path);
                return f.Data.ToArray();
            }

            return new AdditiveParameters(Load(files[0]), Load(files[1]), Load(files[2]));
        }

        if (r.AdditiveDim < 1)
        {
            throw new UsageException($"--additive-dim {r.AdditiveDim} must be at least 1");
        }

        var rng = new Random(r.Seed + 7);
        float Draw() => (float)((rng.NextDouble() * 2) - 1) / MathF.Sqrt(dk);
        var wq = new float[dk * r.AdditiveDim];
        var wk = new float[dk * r.AdditiveDim];
        var v = new float[r.AdditiveDim];
        for (int i = 0; i < wq.Length; i++)
        {
            wq[i] = Draw();
            wk[i] = Draw();
        }

        for (int i = 0; i < v.Length; i++)
        {
            v[i] = Draw();
        }

        return new AdditiveParameters(wq, wk, v);
    }

    /// <summary>
    /// Runs <paramref name="work"/>, handing every progress report to <paramref name="seen"/>, with a
    /// progress bar on stderr when it is a terminal, not quiet, and the job is long enough.
    /// </summary>
    private static async Task<AttentionResult> WithProgress(RunRequest request, TextWriter stderr, TimeSpan estimated, Action<JobProgress> seen, Func<IProgress<JobProgress>, CancellationToken, Task<AttentionResult>> work, CancellationToken cancellationToken)
    {
        bool terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (request.Quiet || !terminal || estimated < TimeSpan.FromSeconds(1))
        {
            return await work(new Reports(seen), cancellationToken);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
        AttentionResult? result = null;
        await console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                string estimate = $"est. {JobEstimate.Duration(estimated)}";
                var task = ctx.AddTask($"planning, {estimate}", maxValue: 1);
                var progress = new Reports(p =>
                {
                    seen(p);
                    task.MaxValue = Math.Max(p.ShardsTotal, 1);
                    task.Value = p.ShardsDone;
                    double rate = p.FlopsDone / 1e9 / Math.Max(p.Elapsed.TotalSeconds, 1e-9);
                    task.Description = string.Create(CultureInfo.InvariantCulture, $"{p.ShardsDone}/{p.ShardsTotal} shards, {rate:F1} GFLOP/s, {estimate}");
                });
                result = await work(progress, cancellationToken);
                task.Value = task.MaxValue;
            });
        return result!;
    }

    /// <summary>Progress reports handled on the reporting thread, in order (the client actor reports one at a time).</summary>
    private sealed class Reports(Action<JobProgress> report) : IProgress<JobProgress>
    {
        public void Report(JobProgress value) => report(value);
    }
}
