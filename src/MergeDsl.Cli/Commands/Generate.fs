/// `mergedsl generate MODEL --prompt TEXT [...]`: continue a prompt with a decoder model (greedy, or sampled with
/// temperature, top-k and a seed), using the KV cache.
module MergeDsl.Cli.Commands.Generate

open System
open System.Text.Json
open Argu
open MergeDsl.Core.Models.Decoder
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Model of folder: string
    | [<Mandatory>] Prompt of text: string
    | Max_New_Tokens of count: int
    | Temperature of value: float
    | Top_K of count: int
    | Seed of seed: int64
    | Routing of policy: string
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Model _ -> "a Hugging Face Llama/Mistral/Qwen2 folder (config.json, safetensors, tokenizer)."
            | Prompt _ -> "the text to continue (BOS is put before it when the tokenizer has one)."
            | Max_New_Tokens _ -> "tokens to generate at most (default 32); generation stops early at EOS."
            | Temperature _ -> "0 (default): greedy; above 0: sample from softmax(logits / T)."
            | Top_K _ -> "when sampling, only the K most likely tokens (default 0: all)."
            | Seed _ -> "sampler seed (default 1): the same seed gives the same text."
            | Routing _ -> "sparse MoE models: top-k:K, top-p:P or top-p:P,max:M instead of the model's own routing."
            | Json -> "print JSON (prompt, continuation, token ids)."

/// Entry point for `mergedsl generate`.
let run (args: ParseResults<Args>) : int =
    let folder = MergeDsl.Cli.Jobs.JobInputs.modelFolder "generate" (args.GetResult Model)
    let options (eos: Nullable<int>) =
        GenerationOptions(
            StopAtEos = eos,
            MaxNewTokens = args.GetResult(Max_New_Tokens, defaultValue = 32),
            Temperature = args.GetResult(Temperature, defaultValue = 0.0),
            TopK = args.GetResult(Top_K, defaultValue = 0),
            Seed = args.GetResult(Seed, defaultValue = 1L))
    let checkedOptions =
        try
            options(Nullable()).Validate()
        with :? ArgumentException as e ->
            raise (UsageError $"generate: {e.Message}")
    let routing = args.TryGetResult Routing |> Option.map Score.parseRouting
    let struct (model, tokenizer) = DecoderModelFolder.LoadWithTokenizer folder
    use model = model
    Score.applyRouting model routing
    let blocks = MergeDsl.Core.Moe.Sparse.SparseMoe.Blocks model
    let prompt = args.GetResult Prompt
    let ids = ResizeArray<int>()
    if tokenizer.BosId.HasValue then ids.Add tokenizer.BosId.Value
    ids.AddRange(tokenizer.Encode prompt)
    if ids.Count = 0 then raise (UsageError "generate: the prompt is empty and the tokenizer has no BOS to start from")
    let total = ids.Count + checkedOptions.MaxNewTokens
    if total > model.Config.MaxPositionEmbeddings then
        raise (UsageError $"generate: the prompt ({ids.Count} tokens) plus --max-new-tokens {checkedOptions.MaxNewTokens} is longer than max_position_embeddings {model.Config.MaxPositionEmbeddings} of {model.Label}")
    let eos = if tokenizer.EosId.HasValue then tokenizer.EosId else model.Config.EosTokenId
    use stats = new MergeDsl.Core.Moe.Sparse.RoutingStatistics(model)
    let result = DecoderGeneration.Generate(model, ids, options eos)
    let continuation = tokenizer.Decode result.Tokens
    if args.Contains Json then
        let o =
            {| prompt = prompt
               continuation = continuation
               tokens = result.Tokens |> Array.ofSeq
               routing = (if blocks.Count = 0 then null else string blocks[0].Routing)
               experts_per_token = (if blocks.Count = 0 then Nullable() else Nullable(stats.MeanExpertsPerToken())) |}
        printfn "%s" (JsonSerializer.Serialize(o, JsonSerializerOptions(WriteIndented = true)))
    else
        // The continuation comes from the checkpoint's vocabulary: escaped like everything else printed from a model.
        printfn "%s" (MergeDsl.Core.Text.TerminalText.Sanitize(prompt + continuation, Int32.MaxValue))
        if blocks.Count > 0 then eprintfn "experts per token %.3f (%s)" (stats.MeanExpertsPerToken()) (string blocks[0].Routing)
    ExitCode.Ok
