using System.CommandLine;
using AttentionActors.Cli.Commands;

var root = new RootCommand("AttentionActors: exact attention over very long sequences, sharded across actors.")
{
    BenchCommand.Create(),
};

return root.Parse(args).Invoke();
