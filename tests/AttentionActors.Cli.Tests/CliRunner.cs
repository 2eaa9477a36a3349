namespace AttentionActors.Cli.Tests;

/// <summary>Runs the `attention` command line in-process and captures what it prints.</summary>
internal static class CliRunner
{
    public static async Task<(int Code, string Out, string Err)> Run(CancellationToken cancellationToken, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await Cli.RunAsync(args, stdout, stderr, cancellationToken);
        return (code, stdout.ToString(), stderr.ToString());
    }

    public static Task<(int Code, string Out, string Err)> Run(params string[] args) => Run(CancellationToken.None, args);
}
