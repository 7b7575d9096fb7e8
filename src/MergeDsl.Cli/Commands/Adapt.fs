/// `mergedsl adapt MODEL --data DIR [--steps N] [--batch N] [--lr X] [--out DIR]`: test-time adaptation
/// (WEMoE routers, or AdaMerging coefficients with `--method adamerging --expert DIR...`); with `--text-data DIR`
/// (per-task .txt files) the same for Llama-family decoders, on next-token predictions.
module MergeDsl.Cli.Commands.Adapt

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Argu
open MergeDsl.Core.Torch
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Core.Evaluation
open MergeDsl.Core.Adaptation
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of dir: string
    | [<Unique>] Data of dir: string
    | [<Unique; CustomCommandLine("--text-data")>] Text_Data of dir: string
    | [<Unique; CustomCommandLine("--seq-len")>] Seq_Len of n: int
    | [<Unique>] Steps of n: int
    | [<Unique>] Batch of n: int
    | [<Unique>] Lr of rate: float
    | [<Unique>] Objective of objective: string
    | [<Unique>] Diversity of weight: float
    | Teacher of spec: string
    | [<Unique>] Out of dir: string
    | [<Unique>] Method of ``method``: string
    | Expert of dir: string
    | [<Unique>] Seed of seed: int64
    | [<Unique>] Device of device: string
    | Overwrite
    | Quiet
    | [<Unique>] Threads of n: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "an upscaled WEMoE model folder (routers), or the base model for AdaMerging."
            | Data _ -> "CLIP: folder of <task>.safetensors with images (labels are not used)."
            | Text_Data _ -> "language models: folder of <task>.txt (UTF-8), tokenized with MODEL's tokenizer; windows of --seq-len tokens are drawn from each."
            | Seq_Len _ -> "with --text-data: tokens per window (default 64; at most max_position_embeddings)."
            | Steps _ -> "optimiser steps (default 1000)."
            | Batch _ -> "images (or text windows) per task per step (default 16)."
            | Lr _ -> "Adam learning rate (default 1e-4 routers, 1e-3 AdaMerging)."
            | Objective _ -> "entropy (default, the papers'), entropy-diversity (entropy minus the entropy of the batch's mean prediction), distillation (KL from each task's --teacher) or supervised (cross-entropy; needs labels)."
            | Diversity _ -> "weight of the diversity term of entropy-diversity (default 1)."
            | Teacher _ -> "distillation: TASK=DIR, the model folder whose predictions task TASK is distilled from (repeat for every task; for text, TASK's expert decoder)."
            | Out _ -> "output folder (default MODEL-adapted); gets adapt_log.json too."
            | Method _ -> "routers (default), adamerging (layer-wise) or adamerging-task."
            | Expert _ -> "AdaMerging: an expert model folder (repeat, in task order)."
            | Seed _ -> "batch sampling seed (default 0)."
            | Device _ -> "auto (default), cpu or cuda."
            | Overwrite -> "replace an existing output folder."
            | Quiet -> "no progress bar."
            | Threads _ -> "CPU threads for tensor math (default: libtorch's choice; 1 is much faster on a busy machine)."

let private logJson (options: AdaptOptions) (r: AdaptResult) (extra: (string * JsonNode) list) =
    let o = JsonObject()
    o["objective"] <- JsonValue.Create(EntropyObjective.Name options.Objective)
    o["diversity_weight"] <- JsonValue.Create options.DiversityWeight
    o["steps"] <- JsonValue.Create r.Log.Count
    o["seconds"] <- JsonValue.Create r.Seconds
    o["steps_per_second"] <- JsonValue.Create(if Double.IsNaN r.StepsPerSecond then 0.0 else r.StepsPerSecond)
    o["peak_rss_bytes"] <- JsonValue.Create r.PeakRssBytes
    o["trained"] <- JsonArray(r.TrainedParameters |> Seq.map (fun n -> JsonValue.Create n :> JsonNode) |> Array.ofSeq)
    o["loss"] <- JsonArray(r.Log |> Seq.map (fun s -> JsonValue.Create s.Loss :> JsonNode) |> Array.ofSeq)
    for k, v in extra do o[k] <- v
    o.ToJsonString(JsonSerializerOptions(WriteIndented = true))

/// `--teacher TASK=DIR` by task, when the objective is distillation (None otherwise; --teacher is then refused).
let private teacherFolders (args: ParseResults<Args>) (options: AdaptOptions) =
    let specs = args.GetResults Teacher
    if options.Objective <> AdaptObjective.Distillation then
        if not specs.IsEmpty then raise (UsageError "--teacher is only read by --objective distillation")
        None
    else
        specs
        |> List.map (fun s ->
            match s.Split('=', 2) with
            | [| task; dir |] when task.Trim() <> "" && dir.Trim() <> "" -> task.Trim(), dir.Trim()
            | _ -> raise (UsageError $"--teacher: expected TASK=DIR, got '{s}'"))
        |> dict
        |> Some

/// The distillation objective's teachers: one plain model folder per task (`--teacher TASK=DIR`), scored with the
/// task's head; None for the other objectives. The caller disposes them.
let private teachers (args: ParseResults<Args>) (options: AdaptOptions) (data: Collections.Generic.IReadOnlyList<TaskData>)
                     (heads: Collections.Generic.IReadOnlyDictionary<string, ClassificationHead>) =
    match teacherFolders args options with
    | None -> None
    | Some byTask ->
        let models =
            [ for d in data ->
                match byTask.TryGetValue d.Task with
                | true, dir ->
                    let struct (m, hs) = ClipModelFolder.LoadPlain dir
                    for h in hs.Values do h.Dispose()
                    TorchSharp.ModuleExtensionMethods.``to``(m, options.Device |> Option.ofObj |> Option.defaultValue TorchSharp.torch.CPU) |> ignore
                    m
                | _ -> raise (UsageError $"--objective distillation: no --teacher for task {d.Task}") ]
        Some(new ExpertTeachers(models, [ for d in data -> heads[d.Task] ]))

/// The output, checked against every input folder and locked before any work.
let private reserveOutput (args: ParseResults<Args>) (modelDir: string) (out: string) =
    let teacherDirs =
        args.GetResults Teacher |> List.choose (fun s -> match s.Split('=', 2) with [| _; d |] when d.Trim() <> "" -> Some(d.Trim()) | _ -> None)
    let inputs =
        [ OutputInput.Of("MODEL", modelDir)
          (match args.TryGetResult Data with
           | Some d -> OutputInput.Of("--data", d)
           | None -> OutputInput.Of("--text-data", args.GetResult Text_Data)) ]
        @ (args.GetResults Expert |> List.map (fun e -> OutputInput.Of("--expert", e)))
        @ (teacherDirs |> List.map (fun d -> OutputInput.Of("--teacher", d)))
    try OutputFolder.Reserve(out, args.Contains Overwrite, inputs, "use --overwrite")
    with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")

/// The data tasks, each with a head (else refused, as `eval` does), loaded and checked against the model, and the
/// batch checked against memory.
let private loadData (dataDir: string) (modelDir: string) (heads: Collections.Generic.IReadOnlyCollection<string>) (cfg: ClipVisionConfig)
                     (routedSites: int) (options: AdaptOptions) =
    if not (Directory.Exists dataDir) then raise (UsageError $"--data {dataDir}: no such folder")
    let tasks = TaskDataFolder.Tasks dataDir
    if tasks.Count = 0 then raise (UsageError $"--data {dataDir}: no <task>.safetensors files")
    try
        AdaptInputs.CheckHeads(tasks, heads, dataDir, modelDir)
        AdaptInputs.CheckBatch("--batch", options.BatchPerTask, tasks.Count, AdaptInputs.BytesPerSample(cfg, routedSites, true), AdaptInputs.AvailableBytes())
    with :? ArgumentException as e -> raise (UsageError e.Message)
    let data = TaskDataFolder.LoadAll(dataDir, false, tasks)
    try
        AdaptInputs.CheckData(data, cfg, dataDir)
        data
    with e ->
        for d in data do d.Dispose()
        match e with
        | :? ArgumentException -> raise (UsageError e.Message)
        | _ -> reraise ()

/// The per-task texts of `--text-data`, tokenized with the model's tokenizer.
let private loadText (dir: string) (tokenizer: MergeDsl.Core.Models.Decoder.Tokenizers.ITextTokenizer) =
    if not (Directory.Exists dir) then raise (UsageError $"--text-data {dir}: no such folder")
    try TextDataFolder.Load(dir, tokenizer)
    with :? ArgumentException as e -> raise (UsageError $"--text-data: {e.Message}")

/// Distillation teachers for text: `--teacher TASK=DIR`, each a plain decoder folder (the task's expert).
let private decoderTeachers (args: ParseResults<Args>) (options: AdaptOptions) (data: Collections.Generic.IReadOnlyList<TextTaskData>) =
    match teacherFolders args options with
    | None -> None
    | Some byTask ->
        let dirs =
            [ for d in data ->
                match byTask.TryGetValue d.Task with
                | true, dir -> dir
                | _ -> raise (UsageError $"--objective distillation: no --teacher for task {d.Task}") ]
        let device = options.Device |> Option.ofObj |> Option.defaultValue TorchSharp.torch.CPU
        let models = ResizeArray()
        try
            for dir in dirs do
                let m = MergeDsl.Core.Models.Decoder.DecoderModelFolder.Load dir
                models.Add m
                TorchSharp.ModuleExtensionMethods.``to``(m, device) |> ignore
        with _ ->
            for m in models do m.Dispose()
            reraise ()
        Some(new DecoderExpertTeachers(models))

/// `adapt` on a language model: `--text-data` windows, decoder routers or decoder AdaMerging.
let private runText (args: ParseResults<Args>) (options: AdaptOptions) (modelDir: string) (out: string) (quiet: bool) (textDir: string) =
    let seqLen = args.GetResult(Seq_Len, defaultValue = 64)
    if seqLen < 2 then raise (UsageError $"--seq-len must be at least 2, got {seqLen}")
    if not (DecoderMoeFolder.IsLanguageModel modelDir) then
        raise (UsageError $"{modelDir}: not a language model (--text-data adapts Llama-family decoders; use --data for CLIP models)")
    let logFile = "adapt_log.json"
    let teacherFn (t: DecoderExpertTeachers option) = t |> Option.map (fun t -> t.AsFunction()) |> Option.toObj
    let extra = [ "sequence_length", JsonValue.Create seqLen :> JsonNode; "text_data", JsonValue.Create(Path.GetFullPath textDir) :> JsonNode ]
    match args.GetResult(Method, defaultValue = "routers").ToLowerInvariant() with
    | "routers" | "wemoe" ->
        if not (DecoderMoeFolder.IsDecoderMoe modelDir) then
            raise (UsageError $"{modelDir}: not an upscaled decoder (config.json model_type is not {DecoderMoeFolder.ModelType}); upscale it with `mergedsl upscale wemoe`, or use --method adamerging")
        use output = reserveOutput args modelDir out
        let moe = DecoderMoeFolder.Load modelDir
        use model = moe.Model
        let tokenizer = MergeDsl.Core.Models.Decoder.Tokenizers.TokenizerFiles.Load(modelDir, model.Config)
        let data = loadText textDir tokenizer
        let teacher = decoderTeachers args options data
        let r =
            try
                Progress.adaptation (not quiet) options.Steps (fun report ->
                    DecoderRouterAdaptation.Run(moe, data, seqLen, options, report, teacher = teacherFn teacher))
            finally
                teacher |> Option.iter (fun t -> t.Dispose())
        TorchSharp.ModuleExtensionMethods.``to``(model, TorchSharp.torch.CPU) |> ignore
        DecoderMoeFolder.Save(out, moe, modelDir, output = output,
                              extraFiles = readOnlyDict [ logFile, logJson options r (("method", JsonValue.Create "wemoe-routers" :> JsonNode) :: extra) ])
        let first = if r.Log.Count > 0 then r.Log[0].Loss else nan
        let last = if r.Log.Count > 0 then r.Log[r.Log.Count - 1].Loss else nan
        printfn "adapted %d router parameter tensors over %d tasks: objective %.4f -> %.4f, %.2f steps/s, peak RSS %s; wrote %s"
            r.TrainedParameters.Count data.Count first last r.StepsPerSecond (ByteSize.Format r.PeakRssBytes) out
        ExitCode.Ok
    | "adamerging" | "adamerging-layer" | "adamerging-task" as m ->
        let experts = args.GetResults Expert
        if experts.IsEmpty then raise (UsageError "--method adamerging needs --expert DIR for each task's fine-tuned model")
        if DecoderMoeFolder.IsDecoderMoe modelDir then raise (UsageError $"{modelDir}: is an upscaled model; AdaMerging needs the pretrained base")
        use output = reserveOutput args modelDir out
        let gran = if m = "adamerging-task" then AdaMergingGranularity.TaskWise else AdaMergingGranularity.LayerWise
        let cfg = MergeDsl.Core.Models.Decoder.DecoderConfig.Load modelDir
        for e in experts do
            if MergeDsl.Core.Models.Decoder.DecoderConfig.Load e <> cfg then
                raise (UsageError $"--expert {e}: its config.json differs from the base model's ({modelDir})")
        let tokenizer = MergeDsl.Core.Models.Decoder.Tokenizers.TokenizerFiles.Load(modelDir, cfg)
        let data = loadText textDir tokenizer
        use baseSource = Checkpoint.Open modelDir
        let sources = experts |> List.map (fun e -> Checkpoint.Open e :> ITensorSource)
        let teacher = decoderTeachers args options data
        try
            let r =
                Progress.adaptation (not quiet) options.Steps (fun report ->
                    DecoderAdaMerging.Run(cfg, baseSource, ResizeArray sources, data, seqLen, options, AdaMergingOptions(gran), report,
                                          teacher = teacherFn teacher))
            use model = r.Model
            TorchSharp.ModuleExtensionMethods.``to``(model, TorchSharp.torch.CPU) |> ignore
            let lambdas = r.Lambdas.data<float32>().ToArray()
            let log =
                logJson options r.Adapt
                    ([ "method", JsonValue.Create m :> JsonNode
                       "lambdas", JsonArray(lambdas |> Array.map (fun l -> JsonValue.Create l :> JsonNode))
                       "lambda_rows", JsonArray(r.ParameterOrder |> Seq.map (fun n -> JsonValue.Create n :> JsonNode) |> Array.ofSeq) ] @ extra)
            MergeDsl.Core.Models.Decoder.DecoderModelFolder.Write(
                out, model, readOnlyDict [ MergeDsl.Core.Models.Decoder.DecoderModelFolder.ConfigFile, cfg.ToJson(); logFile, log ],
                modelDir, output = output)
            printfn "AdaMerging (%s): %d coefficients, %.2f steps/s; wrote %s" m lambdas.Length r.Adapt.StepsPerSecond out
            ExitCode.Ok
        finally
            teacher |> Option.iter (fun t -> t.Dispose())
            for s in sources do s.Dispose()
    | other -> raise (UsageError $"--method: '{other}' is not routers, adamerging or adamerging-task")

/// `adapt` on a CLIP model: `--data` images, routers or AdaMerging.
let private runClip (args: ParseResults<Args>) (options: AdaptOptions) (modelDir: string) (out: string) (quiet: bool) (dataDir: string) =
    if DecoderMoeFolder.IsLanguageModel modelDir then
        raise (UsageError $"{modelDir}: is a language model; give its per-task text with --text-data DIR")
    let logFile = "adapt_log.json"
    match args.GetResult(Method, defaultValue = "routers").ToLowerInvariant() with
    | "routers" | "wemoe" ->
        use output = reserveOutput args modelDir out
        use bundle = MoeModelFolder.Load modelDir
        if isNull (box bundle.Moe) then raise (UsageError $"{modelDir}: not an upscaled model (no mergedsl_moe in config.json); use --method adamerging for plain models")
        let data = loadData dataDir modelDir (bundle.Heads.Keys |> Seq.toArray) bundle.Model.Config bundle.Moe.Sites.Count options
        try
            let teacher = teachers args options data bundle.Heads
            let r =
                try
                    Progress.adaptation (not quiet) options.Steps (fun report ->
                        RouterAdaptation.Run(bundle.Moe, bundle.Heads, data, bundle.Preprocess, options, report,
                                             teacher = (teacher |> Option.map (fun t -> t.AsFunction()) |> Option.toObj)))
                finally
                    teacher |> Option.iter (fun t -> t.Dispose())
            bundle.Save(out, output = output, extraFiles = readOnlyDict [ logFile, logJson options r [ "method", JsonValue.Create "wemoe-routers" ] ])
            let first = if r.Log.Count > 0 then r.Log[0].Loss else nan
            let last = if r.Log.Count > 0 then r.Log[r.Log.Count - 1].Loss else nan
            printfn "adapted %d router parameter tensors over %d tasks: objective %.4f -> %.4f, %.2f steps/s, peak RSS %s; wrote %s"
                r.TrainedParameters.Count data.Count first last r.StepsPerSecond (ByteSize.Format r.PeakRssBytes) out
            ExitCode.Ok
        finally
            for d in data do d.Dispose()
    | "adamerging" | "adamerging-layer" | "adamerging-task" as m ->
        let experts = args.GetResults Expert
        if experts.IsEmpty then raise (UsageError "--method adamerging needs --expert DIR for each task's fine-tuned model")
        use output = reserveOutput args modelDir out
        let gran = if m = "adamerging-task" then AdaMergingGranularity.TaskWise else AdaMergingGranularity.LayerWise
        let cfg = ClipVisionConfig.Load modelDir
        let heads = Collections.Generic.Dictionary<string, ClassificationHead>()
        for f in modelDir :: experts do
            for KeyValue(t, h) in ClipModelFolder.LoadHeads f do
                if not (heads.TryAdd(t, h)) then h.Dispose()
        let data = loadData dataDir modelDir (heads.Keys |> Seq.toArray) cfg 0 options
        use baseSource = Checkpoint.Open modelDir
        let sources = experts |> List.map (fun e -> Checkpoint.Open e :> ITensorSource)
        let preprocess = ClipModelFolder.ReadPreprocess(ClipModelFolder.ReadConfigJson modelDir)
        let teacher = teachers args options data heads
        try
            let r =
                Progress.adaptation (not quiet) options.Steps (fun report ->
                    AdaMerging.Run(cfg, baseSource, ResizeArray sources, heads, data, preprocess, options, AdaMergingOptions(gran), report,
                                   teacher = (teacher |> Option.map (fun t -> t.AsFunction()) |> Option.toObj)))
            use model = r.Model
            let lambdas = r.Lambdas.data<float32>().ToArray()
            let log =
                logJson options r.Adapt
                    [ "method", JsonValue.Create m
                      "lambdas", JsonArray(lambdas |> Array.map (fun l -> JsonValue.Create l :> JsonNode))
                      "lambda_rows", JsonArray(r.ParameterOrder |> Seq.map (fun n -> JsonValue.Create n :> JsonNode) |> Array.ofSeq) ]
            ClipModelFolder.Save(out, model, heads, null, preprocess, output = output, extraFiles = readOnlyDict [ logFile, log ])
            printfn "AdaMerging (%s): %d coefficients, %.2f steps/s; wrote %s" m lambdas.Length r.Adapt.StepsPerSecond out
            ExitCode.Ok
        finally
            teacher |> Option.iter (fun t -> t.Dispose())
            for s in sources do s.Dispose()
            for d in data do d.Dispose()
            for h in heads.Values do h.Dispose()
    | other -> raise (UsageError $"--method: '{other}' is not routers, adamerging or adamerging-task")

let run (args: ParseResults<Args>) : int =
    MergeDsl.Core.Memory.NativeHeap.Apply MergeDsl.Core.Memory.NativeHeapPolicy.MapLargeBlocks |> ignore
    match args.TryGetResult Threads with
    | Some n when n > 0 -> TorchSharp.torch.set_num_threads n
    | Some n -> raise (UsageError $"--threads must be positive, got {n}")
    | None -> ()
    let modelDir = args.GetResult Model
    let options =
        AdaptOptions(
            Steps = args.GetResult(Steps, defaultValue = 1000),
            BatchPerTask = args.GetResult(Batch, defaultValue = 16),
            LearningRate = (args.TryGetResult Lr |> Option.toNullable),
            Objective = (args.TryGetResult Objective |> Option.map (fun o -> EntropyObjective.Parse o) |> Option.defaultValue AdaptObjective.Entropy),
            DiversityWeight = args.GetResult(Diversity, defaultValue = 1.0),
            Seed = args.GetResult(Seed, defaultValue = 0L),
            Device = DeviceChoice.Resolve(DeviceChoice.Parse(args.GetResult(Device, defaultValue = "auto"))))
    // A SettingException reaches the error printer, which names the option (--steps, --lr, ...).
    options.Validate() |> ignore
    if not (Directory.Exists modelDir) then raise (UsageError $"{modelDir}: no such model folder")
    let out = args.GetResult(Out, defaultValue = Path.TrimEndingDirectorySeparator(Path.GetFullPath modelDir) + "-adapted")
    let quiet = args.Contains Quiet
    match args.TryGetResult Data, args.TryGetResult Text_Data with
    | Some _, Some _ -> raise (UsageError "give --data (CLIP images) or --text-data (language-model text), not both")
    | None, None -> raise (UsageError "--data DIR (CLIP images) or --text-data DIR (language-model text) is required")
    | None, Some textDir -> runText args options modelDir out quiet textDir
    | Some dataDir, None -> runClip args options modelDir out quiet dataDir
