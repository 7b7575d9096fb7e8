/// `mergedsl run <recipe> --base DIR --model DIR ... --out DIR`: merge checkpoints with a built-in
/// method or an .fsx recipe script.
module MergeDsl.Cli.Commands.Run

open System
open System.Text.Json
open Argu
open MergeDsl.Cli
open MergeDsl.Cli.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Recipe of recipe: string
    | Base of dir: string
    | [<AltCommandLine("-m")>] Model of dir: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Set of assignment: string
    | Device of device: string
    | Dtype of dtype: string
    | Shard_Size of size: string
    | Seed of n: int64
    | Allow_Nonfinite
    | Force
    | [<AltCommandLine("-q")>] Quiet
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Recipe _ -> Usage.recipe
            | Base _ -> "the base (pretrained) model folder; needed by task-vector methods."
            | Model _ -> "a fine-tuned model folder; repeat for each model."
            | Out _ -> "folder to write the merged model to (must not exist unless --force)."
            | Set _ -> Usage.mergeParameters
            | Device _ -> "auto (default), cpu or cuda."
            | Dtype _ -> "output dtype of merged tensors: f32, f16 or bf16 (default: as the inputs)."
            | Shard_Size _ -> "largest output shard, e.g. 5GB (default), 500MB."
            | Seed _ -> "seed of random masks (DARE, DELLA); default 0."
            | Allow_Nonfinite -> "keep NaN/Inf produced by the merge instead of failing."
            | Force -> "replace --out if it exists."
            | Quiet -> "no progress bar or summary."
            | Json -> "print a machine-readable summary on stdout."

/// The request an argument list describes (shared with `plan`).
let request (recipe: string) (baseDir: string option) (models: string list) (out: string option) (sets: string list) =
    { MergeJob.Request.Default with
        Recipe = JobInputs.recipeSource recipe
        Base = baseDir
        Models = models
        Out = out
        Settings = sets |> List.map (fun s -> try ScriptParams.parseSetting s with :? ArgumentException as e -> raise (UsageError e.Message))
        CommandLine = "mergedsl " + String.Join(" ", Environment.GetCommandLineArgs() |> Array.skip 1 |> Array.map (fun a -> if a.Contains ' ' then $"\"{a}\"" else a)) }

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
let run (args: ParseResults<Args>) : int =
    let out =
        match args.TryGetResult Out with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    let recipe = args.GetResult Recipe
    if Upscale.isUpscaling recipe then
        let settings = args.GetResults Set |> List.map Upscale.parseSetting
        let summary = Upscale.upscale recipe (args.TryGetResult Base) (args.GetResults Model) out settings (args.Contains Force)
        if not (args.Contains Quiet) || args.Contains Json then Upscale.report (args.Contains Json) summary
        ExitCode.Ok
    else
    let req =
        { request recipe (args.TryGetResult Base) (args.GetResults Model) (Some out) (args.GetResults Set) with
            Device = args.GetResult(Device, defaultValue = "auto")
            DType = args.TryGetResult Dtype
            ShardSize = args.TryGetResult Shard_Size
            Seed = args.TryGetResult Seed
            AllowNonFinite = args.Contains Allow_Nonfinite
            Force = args.Contains Force
            Quiet = args.Contains Quiet || args.Contains Json }
    let req = if Mergekit.isConfig recipe then Mergekit.apply req recipe else req
    let summary = MergeJob.run req
    report (args.Contains Json) (args.Contains Quiet) summary
    ExitCode.Ok
