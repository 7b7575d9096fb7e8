module MergeDsl.Cli.Program

open Argu
open MergeDsl.Cli.Failure
open MergeDsl.Cli.Commands

/// Every subcommand of `mergedsl`; each lives in its own module under Commands/.
// No [<RequireSubcommand>]: `mergedsl version` is a flag-style command and must parse on its own.
type Args =
    | [<CliPrefix(CliPrefix.None)>] Version
    | [<AltCommandLine("-v"); Inherit>] Verbose
    | [<CliPrefix(CliPrefix.None)>] Inspect of ParseResults<Inspect.InspectArgs>
    | [<CliPrefix(CliPrefix.None)>] Demo of ParseResults<Demo.DemoArgs>
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<Run.Args>
    | [<CliPrefix(CliPrefix.None)>] Plan of ParseResults<Plan.Args>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<Bench.Args>
    | [<CliPrefix(CliPrefix.None)>] Upscale of ParseResults<Upscale.Args>
    | [<CliPrefix(CliPrefix.None)>] Adapt of ParseResults<Adapt.Args>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<Eval.Args>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Version -> "print the version."
            | Verbose -> "print stack traces with errors."
            | Inspect _ -> "list a checkpoint's tensors (validates every header)."
            | Demo _ -> "build a small demo model zoo, inspect it and merge it with several methods."
            | Run _ -> "merge checkpoints with a built-in method or an .fsx recipe."
            | Plan _ -> "show the compiled plan of a merge (ops, bytes, memory, phases) without running it."
            | Bench _ -> "benchmarks: `bench stream` measures merge speed against a plain copy of the same bytes."
            | Upscale _ -> "upscale a CLIP model and its experts into an MoE model (wemoe, e-wemoe, smile)."
            | Adapt _ -> "test-time adaptation: train WEMoE routers (or AdaMerging coefficients) on unlabelled data."
            | Eval _ -> "per-task accuracy and loss of a model with heads on labelled data (FusionBench JSON)."

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
            elif results.Contains Inspect then
                Inspect.run (results.GetResult Inspect)
            elif results.Contains Demo then
                Demo.run (results.GetResult Demo)
            elif results.Contains Run then
                Run.run (results.GetResult Run)
            elif results.Contains Plan then
                Plan.run (results.GetResult Plan)
            elif results.Contains Bench then
                Bench.run (results.GetResult Bench)
            elif results.Contains Upscale then
                Upscale.run (results.GetResult Upscale)
            elif results.Contains Adapt then
                Adapt.run (results.GetResult Adapt)
            elif results.Contains Eval then
                Eval.run (results.GetResult Eval)
            else
                raise (UsageError "no command given; try `mergedsl --help`"))
