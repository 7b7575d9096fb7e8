module MergeDsl.Cli.Program

open Argu
open MergeDsl.Cli.Failure

/// Every subcommand of `mergedsl`; each lives in its own module under Commands/.
[<RequireSubcommand>]
type Args =
    | [<CliPrefix(CliPrefix.None)>] Version
    | [<AltCommandLine("-v"); Inherit>] Verbose

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Version -> "print the version."
            | Verbose -> "print stack traces with errors."

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Args>(programName = "mergedsl")
    let results =
        try
            Ok(parser.ParseCommandLine(argv, raiseOnUsage = true))
        with :? ArguParseException as e ->
            Error e
    match results with
    | Error e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        ExitCode.Ok
    | Error e ->
        eprintfn "%s" e.Message
        ExitCode.Usage
    | Ok results ->
        let verbose = results.Contains Verbose
        guard verbose (fun () ->
            if results.Contains Version then
                printfn "mergedsl %s" MergeDsl.Version.Current
                ExitCode.Ok
            else
                raise (UsageError "no command given; try `mergedsl --help`"))
