using System.Diagnostics;
using System.Globalization;
using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;
using AttentionActors.Pipeline;
using AttentionActors.Pipeline.Coordinator;
using AttentionActors.Pipeline.Planning;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace AttentionActors.Cli.Commands;

/// <summary>Runs one <c>attention run</c> request; returns the exit code (0 ok, 1 compute failure, 2 bad input).</summary>
internal static class RunJob
{
    public static async Task<int> ExecuteAsync(RunRequest request, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        try
        {
            using var inputs = LoadInputs(request);
            var options = BuildOptions(request, inputs);
            var problem = AttentionProblem.Create(inputs.Q, inputs.K, inputs.V, options);
            if (request.Workers < 1)
            {
                throw new UsageException($"--workers {request.Workers} must be at least 1");
            }

            using var loggers = LoggerFactory.Create(b => b
                .SetMinimumLevel(request.Quiet ? LogLevel.Error : LogLevel.Warning)
                .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
                .AddSimpleConsole(o => o.SingleLine = true)
                .AddFilter((_, _, level) => level >= LogLevel.Warning));
            var cluster = new ClusterOptions { Workers = request.Workers, LoggerFactory = ReferenceEquals(stderr, Console.Error) ? loggers : null };
            var clock = Stopwatch.StartNew();
            var plan = ShardPlanner.Plan(problem, cluster.Workers, cluster.Plan);
            AttentionResult result;
            if (request.SingleNode)
            {
                result = Attention.Compute(problem, new ComputeSettings { Threads = request.Workers }, null, cancellationToken);
            }
            else
            {
                await using var embedded = AttentionCluster.StartEmbedded(cluster);
                result = await WithProgress(request, stderr, plan, (progress, ct) => embedded.ComputeAsync(problem, plan, progress, ct), cancellationToken);
            }

            var elapsed = clock.Elapsed;
            int[] outShape = [.. inputs.Leading, problem.QuerySeq, problem.ValueDim];
            if (request.Out is { } outPath)
            {
                NpyFile.Write(outPath, result.Output.Data.Span, outShape);
            }

            if (request.LseOut is { } lsePath)
            {
                NpyFile.Write(lsePath, result.Lse, [.. inputs.Leading, problem.QuerySeq]);
            }

            if (!request.Quiet)
            {
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"attention: Q {RunInputs.Show(inputs.Q.Shape)}, K/V {RunInputs.Show(inputs.K.Shape)} → out {RunInputs.Show(outShape)}; {(request.SingleNode ? $"single node, {request.Workers} threads" : $"{plan.Shards.Count} shards on {cluster.Workers} workers")}; {elapsed.TotalSeconds:F3} s, {plan.TotalFlops / 1e9:G4} GFLOP visible, {plan.TotalFlops / 1e9 / Math.Max(elapsed.TotalSeconds, 1e-9):F1} GFLOP/s"));
            }

            return request.Verify ? Verifier.Check(problem, result, stdout) : 0;
        }
        catch (Exception ex) when (ex is UsageException or AttentionInputException or NpyFormatException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"attention: {OneLine(ex.Message)}");
            return 2;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("attention: cancelled");
            return 1;
        }
        catch (AttentionJobException ex)
        {
            stderr.WriteLine($"attention: job failed: {OneLine(ex.Message)}");
            return 1;
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    private static RunInputs LoadInputs(RunRequest r)
    {
        bool files = r.Q is not null || r.K is not null || r.V is not null;
        if (files && r.Random)
        {
            throw new UsageException("give either --q/--k/--v or --random, not both");
        }

        if (files)
        {
            if (r.Q is null || r.K is null || r.V is null)
            {
                throw new UsageException($"missing {string.Join(" and ", new[] { ("--q", r.Q), ("--k", r.K), ("--v", r.V) }.Where(x => x.Item2 is null).Select(x => x.Item1))}: --q, --k and --v go together");
            }

            return RunInputs.FromFiles(r.Q, r.K, r.V);
        }

        if (!r.Random)
        {
            throw new UsageException("no input: give --q FILE --k FILE --v FILE, or --random --seq N --dim D");
        }

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

        if ((long)r.Batch * Math.Max(r.Heads, kvHeads) * Math.Max(seq, kvSeq) * dim > Array.MaxLength)
        {
            throw new UsageException($"--random tensor of {(long)r.Batch * r.Heads * seq * dim:N0} elements is more than one tensor may hold");
        }

        return RunInputs.Random(r.Batch, r.Heads, kvHeads, seq, kvSeq, dim, r.Seed);
    }

    private static AttentionOptions BuildOptions(RunRequest r, RunInputs inputs)
    {
        DiagonalAlignment? alignment = r.Alignment switch
        {
            null => null,
            "top-left" => DiagonalAlignment.TopLeft,
            "bottom-right" => DiagonalAlignment.BottomRight,
            _ => throw new UsageException($"--causal '{r.Alignment}' must be top-left or bottom-right"),
        };
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
            Additive = r.Score == ScoreFunction.Additive ? Additive(r, inputs.Q.Dim) : null,
            SoftCap = r.SoftCap,
            AlibiSlopes = r.Alibi ? AttentionOptions.DefaultAlibiSlopes(inputs.Q.Heads) : null,
            Causal = r.Causal,
            Alignment = alignment,
            Window = window,
            KeyLengths = r.KeyLengths is { } lengths ? RunInputs.ParseList("--key-lengths", lengths) : null,
            BlockSize = r.Block,
        };
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

    /// <summary>Runs <paramref name="work"/> with a progress bar on stderr when it is a terminal, not quiet, and the job is long enough.</summary>
    private static async Task<AttentionResult> WithProgress(RunRequest request, TextWriter stderr, ShardPlan plan, Func<IProgress<JobProgress>?, CancellationToken, Task<AttentionResult>> work, CancellationToken cancellationToken)
    {
        bool terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        bool long_ = plan.TotalFlops / (request.Workers * 40e9) > 1.0;
        if (request.Quiet || !terminal || !long_)
        {
            return await work(null, cancellationToken);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
        AttentionResult? result = null;
        await console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask($"{plan.Shards.Count} shards", maxValue: plan.Shards.Count);
                var progress = new Progress<JobProgress>(p =>
                {
                    task.Value = p.ShardsDone;
                    double rate = p.FlopsDone / 1e9 / Math.Max(p.Elapsed.TotalSeconds, 1e-9);
                    task.Description = string.Create(CultureInfo.InvariantCulture, $"{p.ShardsDone}/{p.ShardsTotal} shards, {rate:F1} GFLOP/s");
                });
                result = await work(progress, cancellationToken);
                task.Value = plan.Shards.Count;
            });
        return result!;
    }
}
