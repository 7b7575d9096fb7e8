/// `mergedsl eval MODEL --data DIR [--json FILE]`: per-task accuracy and loss, FusionBench-shaped JSON.
module MergeDsl.Cli.Commands.Eval

open System
open System.IO
open System.Text.Json.Nodes
open Argu
open Spectre.Console
open MergeDsl.Core.Torch
open MergeDsl.Core.Moe
open MergeDsl.Core.Evaluation
open MergeDsl.Cli.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of dir: string
    | [<Mandatory; Unique>] Data of dir: string
    | [<Unique>] Json of file: string
    | [<Unique>] Batch of size: int
    | [<Unique>] Tasks of names: string
    | [<Unique>] Device of device: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "model folder (plain CLIP or upscaled MoE) with heads/<task>.safetensors."
            | Data _ -> "folder of <task>.safetensors files with images [N,C,H,W] (F32 or U8) and labels [N] (I64)."
            | Json _ -> "also write the report as JSON to this file ('-' for stdout)."
            | Batch _ -> "batch size (default 64)."
            | Tasks _ -> "comma-separated tasks to evaluate (default: every data file)."
            | Device _ -> "auto (default), cpu or cuda."

/// Loads a model folder and data, evaluates, returns the report.
let evaluate (modelDir: string) (dataDir: string) (tasks: string list option) (batch: int) (device: TorchSharp.torch.Device) =
    use bundle = MoeModelFolder.Load modelDir
    let data = TaskDataFolder.LoadAll(dataDir, true, (tasks |> Option.map Seq.ofList |> Option.toObj))
    try
        let info = Collections.Generic.Dictionary<string, JsonNode>()
        info["model"] <- JsonValue.Create(Path.GetFullPath modelDir)
        info["kind"] <- JsonValue.Create(if isNull (box bundle.Moe) then "clip" else UpscaleSpec.KindName bundle.Moe.Spec.Kind)
        info["parameters"] <- JsonValue.Create(bundle.Model.parameters() |> Seq.sumBy (fun p -> p.numel()))
        info["device"] <- JsonValue.Create(string device.``type``)
        Evaluator.Evaluate(bundle.Model, bundle.Heads, data, batch, device, bundle.Preprocess, info)
    finally
        for d in data do d.Dispose()

let run (args: ParseResults<Args>) : int =
    let batch = args.GetResult(Batch, defaultValue = 64)
    if batch <= 0 then raise (UsageError $"--batch must be positive, got {batch}")
    let device = DeviceChoice.Resolve(DeviceChoice.Parse(args.GetResult(Device, defaultValue = "auto")))
    let tasks = args.TryGetResult Tasks |> Option.map (fun s -> s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray)
    let report = evaluate (args.GetResult Model) (args.GetResult Data) tasks batch device
    let json = report.ToJsonText()
    match args.TryGetResult Json with
    | Some "-" -> printfn "%s" json
    | jsonFile ->
        let table = Table()
        table.AddColumns("task", "accuracy", "loss", "n") |> ignore
        for t in report.Tasks do
            table.AddRow(Markup.Escape t.Task, $"%.4f{t.Accuracy}", $"%.4f{t.Loss}", string t.Count) |> ignore
        table.AddRow("[bold]average[/]", $"%.4f{report.AverageAccuracy}", $"%.4f{report.AverageLoss}", "") |> ignore
        let console = AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Out)))
        console.Write table
        match jsonFile with
        | Some f ->
            File.WriteAllText(f, json)
            printfn "wrote %s" f
        | None -> ()
    ExitCode.Ok
