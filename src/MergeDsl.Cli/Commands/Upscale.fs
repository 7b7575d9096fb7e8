/// `mergedsl upscale wemoe|e-wemoe|smile --base DIR --model DIR... --out DIR [--set k=v]...`: MoE upscaling.
module MergeDsl.Cli.Commands.Upscale

open System
open System.Text.Json
open System.Text.Json.Nodes
open Argu
open MergeDsl
open MergeDsl.Cli.Jobs
open MergeDsl.Core.Checkpoints
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Method of ``method``: string
    | [<Mandatory; Unique>] Base of dir: string
    | [<Mandatory>] Model of dir: string
    | [<Mandatory; Unique>] Out of dir: string
    | Set of setting: string
    | Overwrite
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Method _ -> Usage.upscalings
            | Base _ -> "the pretrained (base) model folder: CLIP, or a Llama/Mistral/Qwen2 decoder (its MLPs are upscaled)."
            | Model _ -> "a fine-tuned expert model folder (repeat for each expert, in expert order)."
            | Out _ -> "output folder (written atomically)."
            | Set _ -> "key=value, repeatable: " + Usage.upscalingParameters
            | Overwrite -> "replace an existing output folder."
            | Json -> "print the summary as JSON."

/// Splits `key=value`.
let parseSetting (s: string) =
    match s.IndexOf '=' with
    | i when i > 0 -> s.Substring(0, i).Trim(), s.Substring(i + 1).Trim()
    | _ -> raise (UsageError $"--set {s}: expected key=value")

/// Whether `name` is an upscaling method of the registry (so `run` hands it here).
let isUpscaling (name: string) =
    match MethodRegistry.tryFind name with
    | Some m -> (match m.Build with Upscaling _ -> true | Merge _ -> false)
    | None -> false

/// Prints a finished upscale's summary (text, or JSON with --json).
let report (json: bool) (summary: MergeDsl.Core.Moe.UpscaleSummary) =
    if json then
        let o = JsonObject()
        o["output"] <- JsonValue.Create summary.Output
        o["sites"] <- JsonArray(summary.Sites |> Seq.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofSeq)
        o["parameters"] <- JsonValue.Create summary.Parameters
        o["router_parameters"] <- JsonValue.Create summary.TrainableRouterParameters
        o["heads"] <- JsonArray(summary.Heads |> Seq.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofSeq)
        o["seconds"] <- JsonValue.Create summary.Seconds
        printfn "%s" (o.ToJsonString(JsonSerializerOptions(WriteIndented = true)))
    else
        printfn "upscaled %d module(s) into %s: %d parameters (%d in routers), heads: %s, %.2f s"
            summary.Sites.Count summary.Output summary.Parameters summary.TrainableRouterParameters
            (if summary.Heads.Count = 0 then "none" else String.Join(", ", summary.Heads)) summary.Seconds

let private upscaleWith (overwriteOption: string) (methodName: string) (baseDir: string option) (experts: string list) (out: string)
                        (settings: (string * string) list) (overwrite: bool) =
    let dup = settings |> List.countBy fst |> List.tryFind (fun (_, n) -> n > 1)
    match dup with
    | Some (k, _) -> raise (UsageError $"--set {k}: given more than once")
    | None -> ()
    let spec =
        match MethodRegistry.resolve methodName (Map.ofList settings) with
        | Ok { Build = BuiltUpscaling spec } -> spec
        | Ok { Method = m } -> raise (UsageError $"'{m.Name}' is a static merge; use `mergedsl run {m.Name}`")
        | Error msg -> raise (UsageError msg)
    let baseDir =
        match baseDir with
        | Some b -> b
        | None -> raise (UsageError $"--base: {methodName} needs the pretrained model folder (W0 of every expert module)")
    if List.isEmpty experts then raise (UsageError $"--model: {methodName} needs at least one expert")
    let baseDir = MergeDsl.Cli.Jobs.JobInputs.modelFolder "--base" baseDir
    let experts = experts |> List.map (MergeDsl.Cli.Jobs.JobInputs.modelFolder "--model")
    let inputs = OutputInput.Of("--base", baseDir) :: (experts |> List.map (fun e -> OutputInput.Of("--model", e)))
    // The job reserves the output itself; checked here first to name the option in the message.
    try OutputFolder.Validate(out, overwrite, inputs, $"use {overwriteOption}")
    with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")
    Upscale.run spec baseDir experts out overwrite

/// Runs an upscale method from `run`-style arguments (`--force` replaces an output).
let upscale methodName baseDir experts out settings overwrite = upscaleWith "--force" methodName baseDir experts out settings overwrite

let run (args: ParseResults<Args>) : int =
    let settings = args.GetResults Set |> List.map parseSetting
    let experts = args.GetResults Model |> List.collect (fun m -> m.Split(',', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray)
    let summary =
        upscaleWith "--overwrite" (args.GetResult Method) (Some(args.GetResult Base)) experts (args.GetResult Out) settings (args.Contains Overwrite)
    report (args.Contains Json) summary
    ExitCode.Ok
