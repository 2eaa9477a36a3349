using AttentionActors.Cli.Npy;
using AttentionActors.Kernels;

namespace AttentionActors.Cli.Commands;

/// <summary>
/// An output .npy written beside its final path and moved there only by <see cref="Commit"/>, so
/// a failed or cancelled job never leaves a partial or stale-looking file under the name asked for.
/// </summary>
internal sealed class OutputFile : IDisposable
{
    private readonly string temporary;
    private NpyFile? mapped;
    private bool committed;

    private OutputFile(string path)
    {
        Path = path;
        temporary = $"{path}.partial-{Environment.ProcessId}";
    }

    /// <summary>The final path.</summary>
    public string Path { get; }

    /// <summary>The mapped data of a file made by <see cref="Create"/> as a tensor <c>[batch, heads, seq, dim]</c>: one buffer, or segments of whole planes when it is larger than one buffer addresses.</summary>
    public AttentionTensor Tensor(int batch, int heads, int seq, int dim)
        => mapped?.Tensor("out", batch, heads, seq, dim) ?? throw new InvalidOperationException($"{Path} is not a mapped output");

    /// <summary>Checks, before any work, that <paramref name="path"/> can be written: its folder exists and it is not a folder.</summary>
    public static string Check(string option, string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        string? folder = System.IO.Path.GetDirectoryName(full);
        if (folder is not null && !Directory.Exists(folder))
        {
            throw new UsageException($"{option} {path}: the folder {folder} does not exist");
        }

        if (Directory.Exists(full))
        {
            throw new UsageException($"{option} {path} is a folder; give a file name");
        }

        return full;
    }

    /// <summary>A zero-filled output file of <paramref name="shape"/>, mapped so results are written in place.</summary>
    public static OutputFile Create(string path, IReadOnlyList<int> shape)
    {
        var file = new OutputFile(path);
        file.mapped = NpyFile.Create(file.temporary, shape);
        return file;
    }

    public static OutputFile Write(string path, ReadOnlySpan<float> data, IReadOnlyList<int> shape)
    {
        var file = new OutputFile(path);
        NpyFile.Write(file.temporary, data, shape);
        return file;
    }

    /// <summary>Releases the mapping and moves the file to its final path.</summary>
    public void Commit()
    {
        mapped?.Dispose();
        mapped = null;
        File.Move(temporary, Path, overwrite: true);
        committed = true;
    }

    public void Dispose()
    {
        mapped?.Dispose();
        mapped = null;
        if (!committed)
        {
            File.Delete(temporary);
        }
    }
}
