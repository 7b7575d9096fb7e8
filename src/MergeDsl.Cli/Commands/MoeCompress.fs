/// `mergedsl moe compress MODEL --data TEXT --experts K [--rank r] --out DIR`: MC-SMoE ("Merge, Then Compress")
/// on a sparse MoE decoder: routing statistics on calibration text, K dominant experts per layer, the others
/// grouped to them, neurons aligned, groups merged by usage, optionally low-rank compressed.
module MergeDsl.Cli.Commands.MoeCompress

open System
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Adaptation
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe.Sparse
open MergeDsl.Core.Moe.Sparse.Compression
open MergeDsl.Core.Moe.Sparse.Contrast
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of folder: string
    | [<Unique>] Data of file: string
    | [<Unique; CustomCommandLine("--text-data")>] Text_Data of dir: string
    | [<Mandatory; Unique>] Experts of count: int
    | [<Unique>] Rank of rank: int
    | [<Unique>] Eval of file: string
    | [<Unique>] Max_Tokens of count: int
    | [<Unique>] No_Align
    | [<Mandatory; Unique>] Out of dir: string
    | Overwrite
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "a sparse MoE decoder folder (Mixtral, Qwen2-MoE, DeepSeek-MoE)."
            | Data _ -> "calibration text: a UTF-8 file, tokenized with MODEL's tokenizer."
            | Text_Data _ -> "calibration text: a folder of <task>.txt files (an equal share of tokens from each)."
            | Experts _ -> "K: experts kept (merged groups) per sparse layer, 1..E."
            | Rank _ -> "also compress every merged expert's matrices to this rank (truncated SVD)."
            | Eval _ -> "a UTF-8 text scored before and after (bits per byte); default: the calibration text."
            | Max_Tokens _ -> "calibration tokens at most (default 65536)."
            | No_Align -> "merge without neuron alignment (an ablation; MC-SMoE aligns)."
            | Out _ -> "the output folder (a model of the same architecture)."
            | Overwrite -> "replace an existing output folder."
            | Json -> "print the report as JSON."

/// The calibration token streams (BOS first when the tokenizer has one), one per text.
let private calibration (args: ParseResults<Args>) (tokenizer: Tokenizers.ITextTokenizer) =
    let withBos (ids: Collections.Generic.IReadOnlyList<int>) =
        [| if tokenizer.BosId.HasValue then tokenizer.BosId.Value
           yield! ids |]
    match args.TryGetResult Data, args.TryGetResult Text_Data with
    | Some _, Some _ -> raise (UsageError "moe compress: give --data FILE or --text-data DIR, not both")
    | None, None -> raise (UsageError "moe compress: calibration text is needed (--data FILE or --text-data DIR)")
    | Some file, None ->
        let text = Score.readText file
        if text.Length = 0 then raise (UsageError $"--data {file}: the text is empty")
        [ withBos (tokenizer.Encode text) ]
    | None, Some dir ->
        if not (Directory.Exists dir) then raise (UsageError $"--text-data {dir}: no such folder")
        try TextDataFolder.Load(dir, tokenizer) |> Seq.map (fun d -> withBos d.Tokens) |> List.ofSeq
        with :? ArgumentException as e -> raise (UsageError $"--text-data: {e.Message}")

/// Windows of `window` tokens (the last of a stream may be shorter), an equal share of `maxTokens` from each stream.
let private windows (streams: int[] list) (window: int) (maxTokens: int) =
    let share = max window (maxTokens / streams.Length)
    [ for s in streams do
        let s = Array.truncate share s
        for start in 0 .. window .. s.Length - 1 do
            let w = Array.sub s start (min window (s.Length - start))
            if w.Length >= 1 then yield w ]

/// Bits per byte of `tokens` under the model's own routing.
let private bitsPerByte (model: DecoderModel) (tokens: int[]) (bytes: int64) (window: int) =
    let policy = (SparseMoe.Blocks model).[0].Settings.DefaultRouting
    let s = ContrastDecoding.Score(model, tokens, window, SelfContrastSettings(policy, policy, 0.0, 0.0))
    s.BitsPerByte bytes

/// Entry point for `mergedsl moe compress`.
let run (args: ParseResults<Args>) : int =
    let k = args.GetResult Experts
    if k < 1 then raise (UsageError $"--experts {k} must be at least 1")
    let rank = args.TryGetResult Rank
    match rank with
    | Some r when r < 1 -> raise (UsageError $"--rank {r} must be at least 1")
    | _ -> ()
    let maxTokens = args.GetResult(Max_Tokens, defaultValue = 65536)
    if maxTokens < 2 then raise (UsageError $"--max-tokens {maxTokens} must be at least 2")
    let modelDir = MergeDsl.Cli.Jobs.JobInputs.modelFolder "moe compress" (args.GetResult Model)
    let out = args.GetResult Out
    let struct (model, tokenizer) = DecoderModelFolder.LoadWithTokenizer modelDir
    use model = model
    let blocks = SparseMoe.Blocks model
    if blocks.Count = 0 then
        raise (UsageError $"{modelDir}: {model.Config.Family.Architecture()} is a dense model; moe compress needs sparse MoE layers (Mixtral, Qwen2-MoE, DeepSeek-MoE)")
    let options =
        try McSmoeOptions(Experts = k, Rank = Option.toNullable rank, Align = not (args.Contains No_Align)).Validate(blocks |> Seq.map (fun b -> b.NumExperts) |> Seq.min)
        with :? ArgumentException as e -> raise (UsageError $"moe compress: {e.Message}")
    let streams = calibration args tokenizer
    let window = model.Config.MaxPositionEmbeddings
    let calib = windows streams window maxTokens
    if calib |> List.sumBy (fun w -> w.Length) < 1 then raise (UsageError "moe compress: the calibration text gives no tokens")
    let evalText =
        args.TryGetResult Eval
        |> Option.map (fun f ->
            let t = Score.readText f
            if t.Length = 0 then raise (UsageError $"--eval {f}: the text is empty")
            t)
    let evalTokens, evalBytes, evalLabel =
        match evalText with
        | Some t ->
            [| if tokenizer.BosId.HasValue then tokenizer.BosId.Value
               yield! tokenizer.Encode t |], int64 (Encoding.UTF8.GetByteCount t), args.GetResult Eval
        | None ->
            let toks = Array.concat calib
            // Calibration bytes: the decoded tokens' UTF-8 length (BOS decodes to nothing).
            toks, int64 (Encoding.UTF8.GetByteCount(tokenizer.Decode toks)), "calibration text"
    if evalTokens.Length < 2 then raise (UsageError $"{evalLabel}: fewer than two tokens to score")
    let inputs =
        [ OutputInput.Of("MODEL", modelDir) ]
        @ (args.TryGetResult Data |> Option.map (fun d -> OutputInput.Of("--data", d)) |> Option.toList)
        @ (args.TryGetResult Text_Data |> Option.map (fun d -> OutputInput.Of("--text-data", d)) |> Option.toList)
    use output =
        try OutputFolder.Reserve(out, args.Contains Overwrite, inputs, "use --overwrite")
        with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")
    model.eval()
    let before = bitsPerByte model evalTokens evalBytes window
    let report =
        use recorder = new RouterLogitRecorder(model)
        do
            use _ = TorchSharp.torch.no_grad()
            // Windows of one length run 16 at a time; only a stream's last window is shorter.
            for group in calib |> List.groupBy Array.length do
                for chunk in snd group |> List.chunkBySize 16 do
                    use scope = TorchSharp.torch.NewDisposeScope()
                    let flat = chunk |> Array.concat |> Array.map int64
                    model.Forward(TorchSharp.torch.tensor(flat).reshape(int64 chunk.Length, int64 (fst group))) |> ignore
        McSmoe.Compress(model, (fun layer -> recorder.Logits layer), options)
    let after = bitsPerByte model evalTokens evalBytes window
    let layerJson =
        JsonArray(
            report.Layers
            |> Seq.map (fun l ->
                JsonObject(
                    dict [ "layer", JsonValue.Create l.Layer :> JsonNode
                           "usage", JsonArray(l.Usage |> Seq.map (fun u -> JsonValue.Create u :> JsonNode) |> Array.ofSeq)
                           "dominant", JsonArray(l.Groups.Dominant |> Seq.map (fun u -> JsonValue.Create u :> JsonNode) |> Array.ofSeq)
                           "groups", JsonArray(l.Groups.Labels |> Seq.map (fun u -> JsonValue.Create u :> JsonNode) |> Array.ofSeq)
                           "exact_alignment", JsonValue.Create l.ExactAlignment ]) :> JsonNode)
            |> Array.ofSeq)
    let summary =
        JsonObject(
            dict [ "model", JsonValue.Create modelDir :> JsonNode
                   "out", JsonValue.Create out
                   "experts", JsonValue.Create k
                   "rank", (match rank with Some r -> JsonValue.Create r :> JsonNode | None -> null)
                   "aligned", JsonValue.Create options.Align
                   "calibration_tokens", JsonValue.Create report.CalibrationTokens
                   "parameters_before", JsonValue.Create report.ParametersBefore
                   "parameters_after", JsonValue.Create report.ParametersAfter
                   "parameters_kept", JsonValue.Create(float report.ParametersAfter / float report.ParametersBefore)
                   "eval", JsonValue.Create evalLabel
                   "bits_per_byte_before", JsonValue.Create before
                   "bits_per_byte_after", JsonValue.Create after
                   "layers", layerJson ])
    let text = summary.ToJsonString(JsonSerializerOptions(WriteIndented = true))
    DecoderModelFolder.Write(out, model, readOnlyDict [ DecoderModelFolder.ConfigFile, model.Config.ToJson(); "mc_smoe.json", text ], modelDir, output = output)
    if args.Contains Json then printfn "%s" text
    else
        printfn "MC-SMoE: %d of %d experts per layer%s, %d calibration tokens; wrote %s" k blocks[0].NumExperts
            (match rank with Some r -> $", rank {r}" | None -> "") report.CalibrationTokens out
        printfn "parameters     %d -> %d (%.1f %% kept; merged experts counted once)" report.ParametersBefore report.ParametersAfter
            (100.0 * float report.ParametersAfter / float report.ParametersBefore)
        printfn "bits per byte  %.4f -> %.4f (%s)" before after (MergeDsl.Core.Text.TerminalText.Sanitize(evalLabel, 200))
        for l in report.Layers do
            printfn "layer %d: dominant %s, groups %s" l.Layer (String.Join(",", l.Groups.Dominant)) (String.Join(",", l.Groups.Labels))
    ExitCode.Ok
