/// `mergedsl run <recipe> --base DIR --model DIR ... --out DIR`: merge checkpoints with a built-in
/// method or an .fsx recipe script.
module MergeDsl.Cli.Commands.Run

open System
open System.Text.Json
open Argu
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure
open MergeDsl.Cli.Commands.MergeArgs

/// Prints a finished merge's summary.
let report (json: bool) (quiet: bool) (s: MergeJob.Summary) =
    if json then
        printfn "%s" (JsonSerializer.Serialize(s, JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase)))
    elif not quiet then
        let ps = if s.Parameters.Count = 0 then "" else " (" + String.Join(", ", s.Parameters |> Seq.map (fun kv -> $"{kv.Key}={kv.Value}")) + ")"
        printfn "merged %d tensors with %s%s into %s" s.Tensors s.Recipe ps s.Out
        printfn "read %s, wrote %s in %.2f s on %s; peak memory %s" (MergeDsl.Core.Checkpoints.ByteSize.Format s.BytesRead)
            (MergeDsl.Core.Checkpoints.ByteSize.Format s.BytesWritten) s.Seconds s.Device
            (MergeDsl.Core.Checkpoints.ByteSize.Format s.PeakRssBytes)

/// Entry point for `mergedsl run`.
let run (args: ParseResults<MergeArgs.Args>) : int =
    match MergeArgs.inChildForScript "run" args with
    | Some code -> code
    | None ->
    let recipe = args.GetResult Recipe
    let out =
        match args.TryGetResult Out with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    if Upscale.isUpscaling recipe then
        let settings = args.GetResults Set |> List.map Upscale.parseSetting
        let summary = Upscale.upscale recipe (args.TryGetResult Base) (args.GetResults Model) out settings (args.Contains Force)
        if not (args.Contains Quiet) || args.Contains Json then Upscale.report (args.Contains Json) summary
        ExitCode.Ok
    else
    if args.Contains Tensors then raise (UsageError "--tensors: only `mergedsl plan` lists tensors")
    let req = MergeArgs.request args (Some out)
    let summary = MergeJob.run req
    report (args.Contains Json) (args.Contains Quiet) summary
    ExitCode.Ok
