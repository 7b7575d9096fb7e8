/// `mergedsl eval MODEL --data DIR [--json FILE]`: per-task accuracy and loss, FusionBench-shaped JSON; with
/// `--text-data DIR` (language models, plain or upscaled decoders) per-task bits per byte of each <task>.txt.
module MergeDsl.Cli.Commands.Eval

open System
open System.IO
open System.Collections.Generic
open System.Text.Json.Nodes
open Argu
open Spectre.Console
open MergeDsl.Core.Torch
open MergeDsl.Core.Moe
open MergeDsl.Core.Evaluation
open MergeDsl.Core.Adaptation
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Text
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of dir: string
    | [<Unique>] Data of dir: string
    | [<Unique; CustomCommandLine("--text-data")>] Text_Data of dir: string
    | [<Unique>] Json of file: string
    | [<Unique>] Batch of size: int
    | [<Unique>] Tasks of names: string
    | [<Unique>] Device of device: string
    | [<Unique>] Threads of n: int
    | Heads of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "model folder (plain CLIP or upscaled MoE) with heads/<task>.safetensors."
            | Data _ -> "folder of <task>.safetensors files with images [N,C,H,W] (F32 or U8) and labels [N] (I64)."
            | Text_Data _ -> "language models (plain or upscaled decoders): folder of <task>.txt (UTF-8); reports bits per byte, next-token accuracy and log-likelihood per task."
            | Json _ -> "also write the report as JSON to this file ('-' for stdout)."
            | Batch _ -> "batch size (default 64)."
            | Tasks _ -> "comma-separated tasks to evaluate (default: every data file)."
            | Device _ -> "auto (default), cpu or cuda."
            | Heads _ -> "also take task heads from this model folder (its heads/) or heads folder; repeatable (e.g. the experts of a merged model)."
            | Threads _ -> "CPU threads for tensor math (default: libtorch's choice; 1 is much faster on a busy machine)."

/// Loads a model folder and data, evaluates, returns the report.
/// Heads of a model folder (DIR/heads/*.safetensors) or of a bare heads folder (DIR/*.safetensors).
let headsFrom (dir: string) =
    if Directory.Exists(Path.Combine(dir, MergeDsl.Core.Models.ClipModelFolder.HeadsFolder)) then MergeDsl.Core.Models.ClipModelFolder.LoadHeads dir
    elif Directory.Exists dir then
        Directory.GetFiles(dir, "*.safetensors")
        |> Array.map (fun f -> let t = Path.GetFileNameWithoutExtension f in KeyValuePair(t, MergeDsl.Core.Models.ClipModelFolder.LoadHead(t, f)))
        |> Collections.Generic.Dictionary
    else raise (UsageError $"--heads {dir}: no such folder")

let evaluate (modelDir: string) (dataDir: string) (tasks: string list option) (batch: int) (device: TorchSharp.torch.Device) (extraHeads: string list) =
    if not (Directory.Exists dataDir) then raise (UsageError $"--data {dataDir}: no such folder")
    use bundle = MoeModelFolder.Load modelDir
    let heads = Collections.Generic.Dictionary<string, MergeDsl.Core.Models.ClassificationHead>(bundle.Heads)
    for d in extraHeads do
        for KeyValue(t, h) in headsFrom d do
            if not (heads.TryAdd(t, h)) then h.Dispose()
    let wanted = tasks |> Option.defaultWith (fun () -> List.ofSeq (TaskDataFolder.Tasks dataDir))
    let routedSites = if isNull (box bundle.Moe) then 0 else bundle.Moe.Sites.Count
    // The same checks as adapt: a data task without a head is refused, not skipped; the batch must fit in memory.
    try
        AdaptInputs.CheckHeads(wanted, heads.Keys, dataDir, modelDir)
        AdaptInputs.CheckBatch("--batch", batch, 1, AdaptInputs.BytesPerSample(bundle.Model.Config, routedSites, false), AdaptInputs.AvailableBytes())
    with :? ArgumentException as e -> raise (UsageError e.Message)
    let data = TaskDataFolder.LoadAll(dataDir, true, wanted)
    try
        try AdaptInputs.CheckData(data, bundle.Model.Config, dataDir)
        with :? ArgumentException as e -> raise (UsageError e.Message)
        let info = Collections.Generic.Dictionary<string, JsonNode>()
        info["model"] <- JsonValue.Create(Path.GetFullPath modelDir)
        info["kind"] <- JsonValue.Create(if isNull (box bundle.Moe) then "clip" else UpscaleSpec.KindName bundle.Moe.Spec.Kind)
        info["parameters"] <- JsonValue.Create(bundle.Model.parameters() |> Seq.sumBy (fun p -> p.numel()))
        info["device"] <- JsonValue.Create(string device.``type``)
        Evaluator.Evaluate(bundle.Model, heads, data, batch, device, bundle.Preprocess, info)
    finally
        for d in data do d.Dispose()

/// Scores a decoder folder (plain or upscaled) on every <task>.txt of `dataDir`; returns the JSON report.
let evaluateText (modelDir: string) (dataDir: string) (tasks: string list option) (batch: int) =
    if not (Directory.Exists dataDir) then raise (UsageError $"--text-data {dataDir}: no such folder")
    if not (DecoderMoeFolder.IsLanguageModel modelDir) then
        raise (UsageError $"{modelDir}: not a language model (--text-data scores Llama-family decoders; use --data for CLIP models)")
    let struct (model, tokenizer) = MergeDsl.Core.Models.Decoder.DecoderModelFolder.LoadWithTokenizer modelDir
    use model = model
    let data =
        try TextDataFolder.Load(dataDir, tokenizer)
        with :? ArgumentException as e -> raise (UsageError $"--text-data: {e.Message}")
    let chosen =
        match tasks with
        | None -> List.ofSeq data
        | Some names ->
            for n in names do
                if not (data |> Seq.exists (fun d -> d.Task = n)) then
                    raise (UsageError $"--tasks: no {n}.txt in {dataDir}")
            data |> Seq.filter (fun d -> List.contains d.Task names) |> List.ofSeq
    let scores =
        try chosen |> List.map (fun d -> TextEvaluation.Score(model, d, batch))
        with :? ArgumentException as e -> raise (UsageError e.Message)
    let perTask = JsonObject()
    for s in scores do
        perTask[s.Task] <-
            JsonObject(
                dict [ "bits_per_byte", JsonValue.Create(s.BitsPerByte) :> JsonNode
                       "next_token_accuracy", JsonValue.Create(s.Accuracy)
                       "mean_log_likelihood", JsonValue.Create(s.MeanLogLikelihood)
                       "tokens_predicted", JsonValue.Create(s.Tokens)
                       "bytes", JsonValue.Create(s.Bytes) ])
    let report = JsonObject()
    report["model"] <- JsonValue.Create(Path.GetFullPath modelDir)
    report["kind"] <- JsonValue.Create(if DecoderMoeFolder.IsDecoderMoe modelDir then "decoder-moe" else "decoder")
    report["parameters"] <- JsonValue.Create(model.ParameterCount)
    report["window_tokens"] <- JsonValue.Create(model.Config.MaxPositionEmbeddings + 1)
    report["tasks"] <- perTask
    report["average_bits_per_byte"] <- JsonValue.Create(scores |> List.averageBy (fun s -> s.BitsPerByte))
    report["average_next_token_accuracy"] <- JsonValue.Create(scores |> List.averageBy (fun s -> s.Accuracy))
    scores, report

/// The report file may not be, or lie inside, an input (the model, data or heads folders): writing there would touch an input.
let private checkJsonTarget (file: string) (inputs: string list) =
    let real = RealPath.Resolve file
    if Directory.Exists real then raise (UsageError $"--json {file}: is a folder")
    for i in inputs do
        if RealPath.IsSameOrInside(real, RealPath.Resolve i) then raise (UsageError $"--json {file}: lies inside an input ({i})")

/// Written beside the target and renamed over it, so a reader never sees half a report.
let private writeAtomically (file: string) (text: string) =
    let full = Path.GetFullPath file
    let temp = $"{full}.tmp-{Guid.NewGuid():N}"
    try
        File.WriteAllText(temp, text)
        File.Move(temp, full, true)
    finally
        if File.Exists temp then File.Delete temp

let run (args: ParseResults<Args>) : int =
    MergeDsl.Core.Memory.NativeHeap.Apply MergeDsl.Core.Memory.NativeHeapPolicy.MapLargeBlocks |> ignore
    match args.TryGetResult Threads with
    | Some n when n > 0 -> TorchSharp.torch.set_num_threads n
    | Some n -> raise (UsageError $"--threads must be positive, got {n}")
    | None -> ()
    let batch = args.GetResult(Batch, defaultValue = 64)
    if batch <= 0 then raise (UsageError $"--batch must be positive, got {batch}")
    let dataDir =
        match args.TryGetResult Data, args.TryGetResult Text_Data with
        | Some _, Some _ -> raise (UsageError "give --data (CLIP images) or --text-data (language-model text), not both")
        | None, None -> raise (UsageError "--data DIR (CLIP images) or --text-data DIR (language-model text) is required")
        | Some d, None | None, Some d -> d
    let jsonTarget = args.TryGetResult Json |> Option.filter (fun f -> f <> "-")
    for f in Option.toList jsonTarget do
        checkJsonTarget f ([ args.GetResult Model; dataDir ] @ args.GetResults Heads)
    let tasks = args.TryGetResult Tasks |> Option.map (fun s -> s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray)
    if args.Contains Text_Data then
        if args.Contains Heads then raise (UsageError "--heads: language models have no task heads (--text-data)")
        let scores, json = evaluateText (args.GetResult Model) dataDir tasks (args.GetResult(Batch, defaultValue = 16))
        match args.TryGetResult Json with
        | Some "-" -> printfn "%s" (json.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
        | jsonFile ->
            let table = Table()
            table.AddColumns("task", "bits/byte", "accuracy", "tokens") |> ignore
            for s in scores do
                table.AddRow(Markup.Escape(TerminalText.Sanitize s.Task), $"%.4f{s.BitsPerByte}", $"%.4f{s.Accuracy}", string s.Tokens) |> ignore
            table.AddRow("[bold]average[/]", $"%.4f{scores |> List.averageBy (fun s -> s.BitsPerByte)}", $"%.4f{scores |> List.averageBy (fun s -> s.Accuracy)}", "") |> ignore
            AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Out))).Write table
            match jsonFile with
            | Some f ->
                writeAtomically f (json.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
                printfn "wrote %s" f
            | None -> ()
        ExitCode.Ok
    else
        let device = DeviceChoice.Resolve(DeviceChoice.Parse(args.GetResult(Device, defaultValue = "auto")))
        let report = evaluate (args.GetResult Model) dataDir tasks batch device (args.GetResults Heads)
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
                writeAtomically f json
                printfn "wrote %s" f
            | None -> ()
        ExitCode.Ok
