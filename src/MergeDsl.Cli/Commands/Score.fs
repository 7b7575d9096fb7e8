/// `mergedsl score MODEL --text FILE [--routing POLICY] [--json]`: how well a decoder model predicts a text (bits
/// per byte, mean log-likelihood per token; for a sparse MoE model also the experts used per token).
module MergeDsl.Cli.Commands.Score

open System
open System.IO
open System.Text
open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe.Sparse
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of folder: string
    | [<Mandatory>] Text of file: string
    | Routing of policy: string
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "a Hugging Face Llama/Mistral/Qwen2 folder (config.json, safetensors, tokenizer)."
            | Text _ -> "a UTF-8 text file to score (BOS is put before it when the tokenizer has one)."
            | Routing _ -> "sparse MoE models: top-k:K, top-p:P or top-p:P,max:M instead of the model's own routing."
            | Json -> "print JSON instead of text."

/// The numbers `score` reports.
type ScoreReport =
    { Model: string
      Text: string
      Bytes: int64
      Tokens: int
      SumLogLikelihood: float
      MeanLogLikelihood: float
      BitsPerByte: float
      /// The routing of a sparse MoE model (its own unless --routing); None for a dense model.
      Routing: string option
      /// Mean experts a token was sent to, over the sparse layers; None for a dense model.
      ExpertsPerToken: float option }

/// Reads a --routing value; a bad one is a usage error that quotes it.
let parseRouting (text: string) : RoutingPolicy =
    try
        RoutingPolicy.Parse text
    with
    | :? FormatException as e -> raise (UsageError $"--routing: {e.Message}")
    | :? ArgumentException as e -> raise (UsageError $"--routing: {e.Message}")

/// Routes the sparse blocks of `model` with `policy` (None: the model's own); refuses a policy for a dense model
/// or one that does not fit its expert count.
let applyRouting (model: DecoderModel) (policy: RoutingPolicy option) =
    match policy with
    | None -> ()
    | Some p ->
        try
            SparseMoe.SetRouting(model, p)
        with :? ArgumentException as e ->
            raise (UsageError $"--routing {p}: {e.Message}")

/// Reads a user's text file (not part of a model, so links anywhere are fine): a regular file of UTF-8 text,
/// at most 64 MiB, opened the core's way so a FIFO or device is refused rather than waited on.
let readText (file: string) =
    if not (File.Exists file || Directory.Exists file) then raise (UsageError $"{file}: no such text file")
    let bytes = ModelFiles.ReadAll(file, 64L <<< 20, null, InputFilePolicy(AllowLinksOutside = true))
    try
        UTF8Encoding(false, true).GetString bytes
    with :? DecoderFallbackException as e ->
        raise (UsageError $"{file}: not UTF-8 text ({e.Message})")

/// Scores the text of `file` with the model of `folder`, routed by `routing` when given.
let score (folder: string) (file: string) (routing: RoutingPolicy option) : ScoreReport =
    let text = readText file
    if text.Length = 0 then raise (UsageError $"{file}: the text is empty; there is nothing to score")
    let struct (model, tokenizer) = DecoderModelFolder.LoadWithTokenizer folder
    use model = model
    applyRouting model routing
    let blocks = SparseMoe.Blocks model
    let ids = tokenizer.Encode text
    let sequence = ResizeArray<int>()
    if tokenizer.BosId.HasValue then sequence.Add tokenizer.BosId.Value
    sequence.AddRange ids
    if sequence.Count > model.Config.MaxPositionEmbeddings then
        raise (UsageError $"{file}: the text is {sequence.Count} tokens, longer than max_position_embeddings {model.Config.MaxPositionEmbeddings} of {model.Label}")
    if sequence.Count < 2 then
        raise (UsageError $"{file}: the text is one token and the tokenizer has no BOS; at least one token must be predicted")
    use stats = new RoutingStatistics(model)
    let s = DecoderScoring.Score(model, ResizeArray [ sequence :> Collections.Generic.IReadOnlyList<int> ])[0]
    // Without BOS the first token is context, not predicted; its bytes still count, as the text is what is measured.
    let bytes = int64 (Encoding.UTF8.GetByteCount text)
    { Model = folder
      Text = file
      Bytes = bytes
      Tokens = s.Tokens
      SumLogLikelihood = s.SumLogLikelihood
      MeanLogLikelihood = s.MeanLogLikelihood
      BitsPerByte = s.BitsPerByte bytes
      Routing = if blocks.Count = 0 then None else Some(string blocks[0].Routing)
      ExpertsPerToken = if blocks.Count = 0 then None else Some(stats.MeanExpertsPerToken()) }

/// Entry point for `mergedsl score`.
let run (args: ParseResults<Args>) : int =
    let routing = args.TryGetResult Routing |> Option.map parseRouting
    let r = score (MergeDsl.Cli.Jobs.JobInputs.modelFolder "score" (args.GetResult Model)) (args.GetResult Text) routing
    if args.Contains Json then
        printfn "%s" (JsonSerializer.Serialize(r, JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower)))
    else
        printfn "%s: %d bytes, %d tokens scored" r.Text r.Bytes r.Tokens
        printfn "bits per byte        %.4f" r.BitsPerByte
        printfn "mean log-likelihood  %.4f nats/token" r.MeanLogLikelihood
        match r.Routing, r.ExpertsPerToken with
        | Some routing, Some k -> printfn "experts per token    %.3f (%s)" k routing
        | _ -> ()
    ExitCode.Ok
