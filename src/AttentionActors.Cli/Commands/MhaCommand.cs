using System.CommandLine;
using System.Globalization;
using AttentionActors.Cli.Commands.Cluster;
using AttentionActors.Cli.Npy;
using AttentionActors.Cluster.Client;
using AttentionActors.Cluster.Security;
using AttentionActors.Kernels;
using AttentionActors.Kernels.Simd;
using AttentionActors.Pipeline;
using Microsoft.Extensions.Logging;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// <c>attention mha</c>: the multi-head attention layer of <c>torch.nn.MultiheadAttention</c>
/// (batch first) from tensors saved with <c>numpy.save</c>: projections, exact attention per head,
/// output projection.
/// </summary>
internal static class MhaCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var x = new Option<string>("--x") { Description = "Input X .npy: [B, N, E_q] or [N, E_q] (batch first)", Required = true };
        var memory = new Option<string?>("--memory") { Description = "Memory M .npy for cross-attention: [B, Nk, E_k] or [Nk, E_k]; keys (and values) come from it [X]" };
        var memoryValue = new Option<string?>("--memory-value") { Description = "A separate value input [B, Nk, E_v], as PyTorch's value argument when vdim ≠ kdim [--memory]" };
        var wq = new Option<string>("--wq") { Description = "W_q .npy [E, E_q] (nn.Linear layout: y = x·Wᵀ + b)", Required = true };
        var wk = new Option<string>("--wk") { Description = "W_k .npy [E, E_k]", Required = true };
        var wv = new Option<string>("--wv") { Description = "W_v .npy [E, E_v]", Required = true };
        var wo = new Option<string>("--wo") { Description = "W_o .npy [E_out, E]", Required = true };
        var bq = new Option<string?>("--bq") { Description = "b_q .npy [E]" };
        var bk = new Option<string?>("--bk") { Description = "b_k .npy [E]" };
        var bv = new Option<string?>("--bv") { Description = "b_v .npy [E]" };
        var bo = new Option<string?>("--bo") { Description = "b_o .npy [E_out]" };
        var heads = new Option<int>("--heads") { Description = "Heads H (E must be a multiple of H; each head has E/H dims, scale 1/√(E/H))", Required = true };
        var causal = new Option<string?>("--causal") { Description = "Causal mask; alignment top-left or bottom-right (required when N ≠ Nk)", Arity = ArgumentArity.ZeroOrOne };
        var keyLengths = new Option<string?>("--key-lengths") { Description = "Per-batch valid key counts n1,n2,... (PyTorch's key_padding_mask with True after them)" };
        var positional = new Option<string?>("--positional") { Description = "Add a positional encoding to X (and M) first: sinusoidal" };
        var workers = new Option<int>("--workers") { Description = "Worker actors (threads with --single-node)", DefaultValueFactory = _ => Environment.ProcessorCount };
        var singleNode = new Option<bool>("--single-node") { Description = "Attention on the single-node kernel instead of the actor pipeline; same bits" };
        var block = new Option<int>("--block") { Description = "Keys per canonical block (multiple of 16)", DefaultValueFactory = _ => AttentionOptions.DefaultBlockSize };
        var output = new Option<string>("--out") { Description = "Output .npy (float32): [B, N, E_out] (or [N, E_out] for 2-D X)", Required = true };
        var weightsAvg = new Option<string?>("--weights-avg-out") { Description = "Attention weights averaged over heads .npy [B, N, Nk] (PyTorch's average_attn_weights); at most 64M values" };
        var command = new Command("mha", "The multi-head attention layer (torch.nn.MultiheadAttention, batch first): projections, exact attention per head, output projection")
        {
            x, memory, memoryValue, wq, wk, wv, wo, bq, bk, bv, bo, heads, causal, keyLengths, positional, workers, singleNode, block, output, weightsAvg,
        };
        var cluster = ClusterFlags.Add(command, ClusterUse.Client);
        command.SetAction(async (r, cancellationToken) =>
        {
            // Reads and checks every input; stops the runner started beside it when one is refused.
            async Task<LayerInputs> ReadAsync(ParseResult r, Task<IAttentionRunner> starting)
            {
                try
                {
                    var outPath = OutputFile.Check("--out", r.GetValue(output)!);
                    var avgPath = r.GetValue(weightsAvg) is { } a ? OutputFile.Check("--weights-avg-out", a) : null;
                    string? pe = r.GetValue(positional);
                    if (pe is not null and not "sinusoidal")
                    {
                        throw new UsageException($"--positional '{pe}' must be sinusoidal");
                    }

                    using var xFile = NpyFile.Read(Existing("--x", r.GetValue(x)!));
                    using var mFile = r.GetValue(memory) is { } mp ? NpyFile.Read(Existing("--memory", mp)) : null;
                    using var vFile = r.GetValue(memoryValue) is { } vp ? NpyFile.Read(Existing("--memory-value", vp)) : null;
                    var (batch, n, eq) = Sequence("--x", xFile);
                    var (mb, nk, ek) = mFile is null ? (batch, n, eq) : Sequence("--memory", mFile);
                    var (vb, vn, ev) = vFile is null ? (mb, nk, ek) : Sequence("--memory-value", vFile);
                    if (mb != batch || vb != batch || vn != nk || (mFile is not null && mFile.Shape.Length != xFile.Shape.Length))
                    {
                        throw new UsageException($"--memory {RunInputs.Show(mFile?.Shape ?? xFile.Shape)} and --memory-value {RunInputs.Show(vFile?.Shape ?? mFile?.Shape ?? xFile.Shape)} must have X's batch {batch} (and rank) and one length Nk");
                    }

                    int h = r.GetValue(heads);
                    var wqT = Matrix("--wq", r.GetValue(wq)!, null, eq);
                    int e = wqT.Rows;
                    if (h < 1 || e % h != 0)
                    {
                        throw new UsageException($"--heads {h}: the embedding dim E = {e} (rows of --wq) must be a positive multiple of the head count");
                    }

                    var wkT = Matrix("--wk", r.GetValue(wk)!, e, ek);
                    var wvT = Matrix("--wv", r.GetValue(wv)!, e, ev);
                    var woT = Matrix("--wo", r.GetValue(wo)!, null, e);
                    var weights = new MultiHeadWeights(h, wqT.Data, wkT.Data, wvT.Data, woT.Data, e, eq, ek, ev, woT.Rows)
                    {
                        Bq = Bias("--bq", r.GetValue(bq), e),
                        Bk = Bias("--bk", r.GetValue(bk), e),
                        Bv = Bias("--bv", r.GetValue(bv), e),
                        Bo = Bias("--bo", r.GetValue(bo), woT.Rows),
                    };
                    if (avgPath is not null && (long)batch * n * nk > InspectStep.MaxWindowCells)
                    {
                        throw new UsageException($"--weights-avg-out: [{batch}, {n}, {nk}] is {(long)batch * n * nk:N0} values, over {InspectStep.MaxWindowCells:N0}; use attention inspect with a window");
                    }

                    var xs = xFile.Data.ToArray();
                    var ks = (mFile ?? xFile).Data.ToArray();
                    var vs = vFile is not null ? vFile.Data.ToArray() : mFile is not null ? ks : xs;
                    Finite("--x", xFile.Path, xs);
                    Finite("--memory", mFile?.Path ?? xFile.Path, ks);
                    Finite("--memory-value", vFile?.Path ?? mFile?.Path ?? xFile.Path, vs);

                    // The encoding is added to copies: X may double as the memory, and must not get it twice.
                    if (pe is not null)
                    {
                        xs = (float[])xs.Clone();
                        ks = mFile is null ? xs : (float[])ks.Clone();
                        vs = vFile is null ? ks : (float[])vs.Clone();
                    }
                    if (pe is not null)
                    {
                        MultiHeadLayer.AddSinusoidal(xs, batch, n, eq);
                        if (!ReferenceEquals(ks, xs))
                        {
                            MultiHeadLayer.AddSinusoidal(ks, batch, nk, ek);
                        }

                        if (!ReferenceEquals(vs, ks) && !ReferenceEquals(vs, xs))
                        {
                            MultiHeadLayer.AddSinusoidal(vs, batch, nk, ev);
                        }
                    }

                    string? alignment = r.GetValue(causal);
                    var options = new AttentionOptions
                    {
                        Causal = r.GetResult(causal) is not null,
                        Alignment = alignment switch { null => null, "top-left" => DiagonalAlignment.TopLeft, "bottom-right" => DiagonalAlignment.BottomRight, _ => throw new UsageException($"--causal '{alignment}' must be top-left or bottom-right") },
                        KeyLengths = r.GetValue(keyLengths) is { } lengths ? RunInputs.ParseList("--key-lengths", lengths) : null,
                        BlockSize = r.GetValue(block),
                    };
                    return new LayerInputs(weights, batch, n, nk, e, eq, ek, ev, h, xs, ks, vs, options, outPath, avgPath, xFile.Shape);
                }
                catch
                {
                    await RunJob.StopAsync(starting);
                    throw;
                }
            }

            var outputs = new List<OutputFile>();
            try
            {
                var clusterOptions = cluster.Client(r);
                if (clusterOptions is not null && r.GetValue(singleNode))
                {
                    throw new UsageException("give --cluster or --single-node, not both");
                }

                // The runner (an actor system: 0.1-0.2 s; or a cluster connection) starts while the
                // inputs are read and checked, as in `run`; the layer's time counts from when both are ready.
                int threads = Math.Clamp(r.GetValue(workers), 1, PipelineOptions.MaxWorkers);
                bool single = r.GetValue(singleNode);

                // Only the cluster client logs (building console logging takes tens of milliseconds).
                using var loggers = clusterOptions is not null && ReferenceEquals(stderr, Console.Error) ? LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Warning).AddSimpleConsole(c => c.SingleLine = true)) : null;
                var starting = Task.Run<IAttentionRunner>(async () => single ? new SingleNodeRunner(threads)
                    : clusterOptions is not null ? await ClusterClient.ConnectAsync(clusterOptions, loggers, cancellationToken)
                    : EmbeddedPipeline.Start(new PipelineOptions { Workers = threads }));
                var (weights, batch, n, nk, e, eq, ek, ev, h, xs, ks, vs, options, outPath, avgPath, xShape) = await ReadAsync(r, starting);
                await using IAttentionRunner runner = await starting;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                var layer = LayerProblem.Create(weights, batch, xs, n, ks, ReferenceEquals(vs, ks) ? null : vs, nk, options);

                // A single node and the embedded pipeline project first and then attend; a cluster's workers project their own shards' rows.
                var result = await runner.ComputeLayerAsync(layer, null, cancellationToken);
                string where = runner.Where;
                var attended = clock.Elapsed;
                var y = MultiHeadLayer.Combine(weights, result.Output, threads, cancellationToken);
                var combined = clock.Elapsed;
                int[] leading = xShape.Length == 3 ? [batch] : [];
                outputs.Add(OutputFile.Write(outPath, y, [.. leading, n, weights.OutDim]));
                if (avgPath is not null)
                {
                    // The weights need the heads' Q and K: projected here, once, for this window only.
                    var headsProblem = new Lazy<AttentionProblem>(() =>
                    {
                        var (q, k, v) = MultiHeadLayer.Project(weights, batch, xs, n, ks, vs, nk, threads, cancellationToken);
                        return AttentionProblem.Create(q, k, v, options);
                    });
                    var avg = new float[(long)batch * n * nk];
                    for (int b = 0; b < batch; b++)
                    {
                        Inspection.Weights(headsProblem.Value, result.Lse, b, null, (0, n), (0, nk), n, nk, WeightPooling.Mean, KernelPath.Auto, threads, cancellationToken).CopyTo(avg, (long)b * n * nk);
                    }

                    outputs.Add(OutputFile.Write(avgPath, avg, [.. leading, n, nk]));
                }

                foreach (var file in outputs)
                {
                    file.Commit();
                }

                double projectionFlops = 2.0 * batch * e * (((double)n * eq) + ((double)nk * (ek + ev)));
                double outputFlops = 2.0 * batch * n * (double)e * weights.OutDim;
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mha: X {RunInputs.Show(xShape)} → out {RunInputs.Show([.. leading, n, weights.OutDim])}; {h} heads of {weights.HeadDim} dims over {nk} keys"));
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mha ({where}): projections and attention {attended.TotalSeconds:F3} s ({(projectionFlops + layer.Geometry.DenseFlops) / 1e9 / Math.Max(attended.TotalSeconds, 1e-9):F1} GFLOP/s dense-equivalent), output projection {(combined - attended).TotalSeconds:F3} s ({outputFlops / 1e9 / Math.Max((combined - attended).TotalSeconds, 1e-9):F1} GFLOP/s)"));
                return 0;
            }
            catch (Exception ex) when (ex is UsageException or AttentionInputException or NpyFormatException or IOException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"attention: {ex.Message.ReplaceLineEndings(" ")}");
                return 2;
            }
            catch (CertificateFileException ex)
            {
                stderr.WriteLine($"attention: {ex.Message.ReplaceLineEndings(" ")}");
                return 2;
            }
            catch (AttentionJobException ex)
            {
                stderr.WriteLine($"attention: job failed: {ex.Message.ReplaceLineEndings(" ")}");
                return 1;
            }
            catch (ClusterUnreachableException ex)
            {
                stderr.WriteLine($"attention: {ex.Message.ReplaceLineEndings(" ")}");
                return 1;
            }
            catch (OperationCanceledException ex)
            {
                stderr.WriteLine(cancellationToken.IsCancellationRequested ? "attention: cancelled" : $"attention: {ex.Message.ReplaceLineEndings(" ")}");
                return 1;
            }
            finally
            {
                outputs.ForEach(f => f.Dispose());
            }
        });
        return command;
    }

    private static string Existing(string option, string path)
        => File.Exists(path) ? path : throw new UsageException($"{option} {path} does not exist");

    /// <summary>(B, N, E) of a [B, N, E] or [N, E] input.</summary>
    private static (int Batch, int Seq, int Dim) Sequence(string option, NpyFile file) => file.Shape switch
    {
        [var nn, var ee] when ee > 0 => (1, nn, ee),
        [var bb, var nn, var ee] when ee > 0 => (bb, nn, ee),
        _ => throw new UsageException($"{option} {file.Path} is {RunInputs.Show(file.Shape)}; expected [B, N, E] or [N, E] with E ≥ 1"),
    };

    private static (float[] Data, int Rows) Matrix(string option, string path, int? rows, int cols)
    {
        using var file = NpyFile.Read(Existing(option, path));
        if (file.Shape.Length != 2 || file.Shape[1] != cols || (rows is { } expected && file.Shape[0] != expected) || file.Shape[0] < 1)
        {
            throw new UsageException($"{option} {path} is {RunInputs.Show(file.Shape)}; expected [{rows?.ToString(CultureInfo.InvariantCulture) ?? "E"}, {cols}] (nn.Linear's [out, in] for this input)");
        }

        var data = file.Data.ToArray();
        Finite(option, path, data);
        return (data, file.Shape[0]);
    }

    private static float[]? Bias(string option, string? path, int length)
    {
        if (path is null)
        {
            return null;
        }

        using var file = NpyFile.Read(Existing(option, path));
        if (file.Shape.Length != 1 || file.Shape[0] != length)
        {
            throw new UsageException($"{option} {path} is {RunInputs.Show(file.Shape)}; expected [{length}]");
        }

        var data = file.Data.ToArray();
        Finite(option, path, data);
        return data;
    }

    private static void Finite(string option, string path, float[] data)
    {
        int bad = Array.FindIndex(data, v => !float.IsFinite(v));
        if (bad >= 0)
        {
            throw new UsageException($"{option} {path} holds {data[bad]} at flat index {bad}");
        }
    }

    /// <summary>The layer's checked inputs: weights, shapes, X and the memory (K and V inputs), options and output paths.</summary>
    private sealed record LayerInputs(MultiHeadWeights Weights, int Batch, int N, int Nk, int E, int Eq, int Ek, int Ev, int Heads, float[] Xs, float[] Ks, float[] Vs, AttentionOptions Options, string OutPath, string? AvgPath, int[] XShape);
}
