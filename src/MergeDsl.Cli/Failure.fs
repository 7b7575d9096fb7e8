/// How the CLI reports failure: one line naming what is at fault, a non-zero exit code, and a stack
/// trace only with --verbose.
module MergeDsl.Cli.Failure

open System

/// A user error the command detected itself (bad argument, missing file): exit code 2.
exception UsageError of string

/// Exit codes: 0 success, 1 the work failed (bad checkpoint, merge error), 2 bad command line.
[<RequireQualifiedAccess>]
module ExitCode =
    [<Literal>]
    let Ok = 0

    [<Literal>]
    let Failed = 1

    [<Literal>]
    let Usage = 2

let rec private innermostMeaningful (e: exn) =
    match e with
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> innermostMeaningful a.InnerExceptions[0]
    | :? Reflection.TargetInvocationException as t when not (isNull t.InnerException) -> innermostMeaningful t.InnerException
    | :? TypeInitializationException as t when not (isNull t.InnerException) -> innermostMeaningful t.InnerException
    | e -> e

/// Runs a command body, turning any exception into a one-line message on stderr and an exit code.
let guard (verbose: bool) (body: unit -> int) : int =
    try
        body ()
    with e ->
        let e = innermostMeaningful e
        let line = e.Message.Replace(Environment.NewLine, " ").Replace("\n", " ").Trim()
        match e with
        | UsageError msg -> eprintfn "mergedsl: %s" msg
        | _ -> eprintfn "mergedsl: error: %s" line
        if verbose then eprintfn "%O" e
        match e with
        | UsageError _
        | :? ArgumentException -> ExitCode.Usage
        | _ -> ExitCode.Failed
