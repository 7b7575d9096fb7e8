/// Runs the `mergedsl` command in-process, as the CLI tests do.
module MergeDsl.Tests.CliHarness

open System
open System.IO

/// Runs `mergedsl args` in-process with stdout and stderr captured; returns exit code, stdout, stderr.
/// Console redirection is process-wide, so lists that use it run sequenced.
let mergedsl (args: string list) : int * string * string =
    let out, err = new StringWriter(), new StringWriter()
    let oldOut, oldErr = Console.Out, Console.Error
    Console.SetOut out
    Console.SetError err
    try
        let code = MergeDsl.Cli.Program.main (Array.ofList args)
        code, out.ToString(), err.ToString()
    finally
        Console.SetOut oldOut
        Console.SetError oldErr
