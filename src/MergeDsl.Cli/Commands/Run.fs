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
        if s.ResumedShards > 0 then
            printfn "resumed: kept %d finished shard(s) of the killed run, skipped %d tensors" s.ResumedShards s.TensorsSkipped

/// Prints what the statistics step or a part did.
let reportShare (json: bool) (quiet: bool) (s: MergeJob.ShareSummary) =
    if json then
        printfn "%s" (JsonSerializer.Serialize(s, JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase)))
    elif not quiet then
        let size = MergeDsl.Core.Checkpoints.ByteSize.Format
        if s.Out = "" then printfn "%s: this merge needs no whole-model statistics; run the parts directly" s.Share
        elif s.Shards = 0 then printfn "%s: read %s in %.2f s, wrote %s" s.Share (size s.BytesRead) s.Seconds s.Out
        else
            printfn "%s: %d tensors in %d shard(s)%s into %s" s.Share s.Tensors s.Shards
                (if s.ResumedShards > 0 then $" ({s.ResumedShards} kept from the killed run)" else "") s.Out
            printfn "read %s, wrote %s in %.2f s; peak memory %s" (size s.BytesRead) (size s.BytesWritten) s.Seconds (size s.PeakRssBytes)

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
        for flag, given in [ "--part", args.Contains Part; "--stats", args.Contains Stats; "--resume", args.Contains Resume; "--max-memory", args.Contains Max_Memory ] do
            if given then raise (UsageError $"{flag}: not available for upscaling to an MoE model, only for merges")
        let settings = args.GetResults Set |> List.map Upscale.parseSetting
        let summary = Upscale.upscale recipe (args.TryGetResult Base) (args.GetResults Model) out settings (args.Contains Force)
        if not (args.Contains Quiet) || args.Contains Json then Upscale.report (args.Contains Json) summary
        ExitCode.Ok
    else
    if args.Contains Tensors then raise (UsageError "--tensors: only `mergedsl plan` lists tensors")
    if args.Contains Parts then raise (UsageError "--parts: only `mergedsl plan` partitions; a run takes --part I/N")
    let req = MergeArgs.request args (Some out)
    match req.Share with
    | MergeJob.Whole -> report (args.Contains Json) (args.Contains Quiet) (MergeJob.run req)
    | MergeJob.StatisticsStep -> reportShare (args.Contains Json) (args.Contains Quiet) (MergeJob.runStatistics req)
    | MergeJob.Part(i, n) -> reportShare (args.Contains Json) (args.Contains Quiet) (MergeJob.runPart req i n)
    ExitCode.Ok
