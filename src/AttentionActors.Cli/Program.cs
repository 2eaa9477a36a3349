using AttentionActors.Cli;

// The first Ctrl-C cancels the job (workers stop at their next query panel); a second one ends the process.
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    if (!cancel.IsCancellationRequested)
    {
        e.Cancel = true;
        Console.Error.WriteLine("attention: cancelling (Ctrl-C again to stop at once)");
        cancel.Cancel();
    }
};

return await Cli.RunAsync(args, Console.Out, Console.Error, cancel.Token);
