using System.Globalization;
using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>Q, K and V for <c>attention run</c>: from .npy files or generated, plus Q's leading dims.</summary>
internal sealed class RunInputs : IDisposable
{
    private readonly List<IDisposable> owned = [];

    public required AttentionTensor Q { get; init; }

    public required AttentionTensor K { get; init; }

    public required AttentionTensor V { get; init; }

    /// <summary>Q's dims before [N, D]: [], [H] or [B, H]; the outputs keep them.</summary>
    public required int[] Leading { get; init; }

    /// <summary>Q, K and V shapes of three .npy files from their headers alone, Q's leading dims, and the bytes converting float64 files will take.</summary>
    public static (TensorShape Q, TensorShape K, TensorShape V, int[] Leading, long HeapBytes) InspectFiles(string qPath, string kPath, string vPath)
    {
        var files = new[] { ("Q", qPath), ("K", kPath), ("V", vPath) }.Select(f => (f.Item1, f.Item2, NpyFile.Inspect(f.Item2))).ToArray();
        if (files.Select(f => f.Item3.Shape.Length).Distinct().Count() != 1)
        {
            throw new UsageException($"Q, K and V must have the same rank; got Q {Show(files[0].Item3.Shape)}, K {Show(files[1].Item3.Shape)}, V {Show(files[2].Item3.Shape)}");
        }

        var shapes = files.Select(f => ShapeOf(f.Item1, f.Item2, f.Item3.Shape)).ToArray();
        long heap = files.Where(f => f.Item3.Width == 8).Sum(f => 4 * f.Item3.Shape.Aggregate(1L, (a, d) => a * d));
        return (shapes[0], shapes[1], shapes[2], files[0].Item3.Shape[..^2], heap);
    }

    public static RunInputs FromFiles(string qPath, string kPath, string vPath)
    {
        var files = new List<NpyFile>();
        try
        {
            files.Add(NpyFile.Read(qPath));
            files.Add(NpyFile.Read(kPath));
            files.Add(NpyFile.Read(vPath));
            var q = Tensor("Q", files[0]);
            var k = Tensor("K", files[1]);
            var v = Tensor("V", files[2]);
            if (files.Select(f => f.Shape.Length).Distinct().Count() != 1)
            {
                throw new UsageException($"Q, K and V must have the same rank; got Q {Show(files[0].Shape)}, K {Show(files[1].Shape)}, V {Show(files[2].Shape)}");
            }

            var inputs = new RunInputs { Q = q, K = k, V = v, Leading = files[0].Shape[..^2] };
            inputs.owned.AddRange(files);
            return inputs;
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }
    }

    public static RunInputs Random(int batch, int heads, int kvHeads, int nq, int nk, int dim, int seed)
    {
        AttentionTensor Make(string name, int stream, int h, int n)
        {
            // Zeros: large tensors on 2 MiB pages where Linux offers them, faulted in 512 times fewer steps.
            var tensor = AttentionTensor.Zeros(name, batch, h, n, dim);
            UniformFill.Fill(tensor.Data, seed, stream, 1.7f);
            return tensor;
        }

        return new RunInputs { Q = Make("Q", 0, heads, nq), K = Make("K", 1, kvHeads, nk), V = Make("V", 2, kvHeads, nk), Leading = [batch, heads] };
    }

    public static string Show(IEnumerable<int> shape) => $"[{string.Join(", ", shape)}]";

    public void Dispose() => owned.ForEach(o => o.Dispose());

    private static AttentionTensor Tensor(string name, NpyFile file)
    {
        var shape = ShapeOf(name, file.Path, file.Shape);
        return file.Tensor(shape.Name, shape.Batch, shape.Heads, shape.Seq, shape.Dim);
    }

    private static TensorShape ShapeOf(string name, string path, int[] s)
    {
        var (b, h, n, d) = s.Length switch
        {
            4 => (s[0], s[1], s[2], s[3]),
            3 => (1, s[0], s[1], s[2]),
            2 => (1, 1, s[0], s[1]),
            _ => throw new UsageException($"{name} ({path}) has shape {Show(s)}; expected [B, H, N, D], [H, N, D] or [N, D]"),
        };
        return new TensorShape($"{name} ({Path.GetFileName(path)})", b, h, n, d);
    }

    public static int[] ParseList(string option, string text)
    {
        try
        {
            return [.. text.Split(',', StringSplitOptions.TrimEntries).Select(t => int.Parse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture))];
        }
        catch (FormatException)
        {
            throw new UsageException($"{option} '{text}' must be comma-separated integers");
        }
        catch (OverflowException)
        {
            throw new UsageException($"{option} '{text}' has a number out of range");
        }
    }
}
