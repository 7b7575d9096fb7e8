/// How the CLI reports failure: one line naming what is at fault, a non-zero exit code, and a stack
/// trace only with --verbose.
module MergeDsl.Cli.Jobs.Failure

open System
open MergeDsl.Core.Execution
open MergeDsl.Core.Ir
open MergeDsl.Core
open MergeDsl.Core.Text
open MergeDsl.Core.Torch

/// A user error the command detected itself (bad argument, missing file): exit code 2.
exception UsageError of string

/// Exit codes: 0 success, 1 the work failed (bad checkpoint, NaN/Inf, I/O), 2 bad command line or inputs found
/// before any work (including every recipe compile error).
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

/// The command-line option of a setting the core names in its own terms (SettingException).
let optionOf (setting: string) =
    match setting with
    | "steps" -> "--steps"
    | "batch per task" -> "--batch"
    | "learning rate" -> "--lr"
    | "diversity weight" -> "--diversity"
    | "objective" -> "--objective"
    | "device" -> "--device"
    | "parts" -> "--parts"
    | "part" -> "--part"
    | "memory cap" -> "--max-memory"
    | other -> other

/// Runs a command body, turning any exception into a one-line message on stderr and an exit code.
let guard (verbose: bool) (body: unit -> int) : int =
    try
        body ()
    with e ->
        let e = innermostMeaningful e
        // Messages quote names from checkpoints and scripts: escape what a terminal would obey.
        let oneLine (s: string) = TerminalText.Sanitize(s.Replace(Environment.NewLine, " ").Replace("\n", " ").Trim())
        match e with
        | UsageError msg -> eprintfn "mergedsl: %s" (oneLine msg)
        | :? NonFiniteTensorException as n -> eprintfn "mergedsl: error: %s (--allow-nonfinite keeps them)" (oneLine n.Message)
        | :? SettingException as s -> eprintfn "mergedsl: %s: %s" (optionOf s.Setting) (oneLine s.Problem)
        | :? DeviceUnavailableException as d -> eprintfn "mergedsl: error: --device %s" (oneLine d.Message)
        | _ -> eprintfn "mergedsl: error: %s" (oneLine e.Message)
        if verbose then eprintfn "%O" e
        match e with
        | UsageError _
        | :? ArgumentException
        // Raised while compiling against the headers, before any tensor data is read: bad input, not a failed merge.
        | :? RecipeException -> ExitCode.Usage
        | _ -> ExitCode.Failed
