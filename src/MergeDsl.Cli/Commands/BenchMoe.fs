/// `mergedsl bench moe`: tokens/s of the sparse MoE block's grouped dispatch at top-1, top-2 and top-p against
/// running every expert densely, per block and for the whole model, on random Mixtral-shaped weights.
module MergeDsl.Cli.Commands.BenchMoe

open System
open System.Text.Json
open Argu
open MergeDsl.Bench.Moe
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Size of name: string
    | Runs of count: int
    | Threads of count: int
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Size _ -> "textpool, mixtral-200m, both (default) or smoke (a 1-layer check)."
            | Runs _ -> "timed runs per variant for the block (the fastest is reported; default 7; the whole model runs min(3, this))."
            | Threads _ -> "libtorch intra-op threads (default: libtorch's choice, one per core)."
            | Json -> "print JSON results."

/// Entry point for `mergedsl bench moe`.
let run (args: ParseResults<Args>) : int =
    let shapes =
        match args.GetResult(Size, defaultValue = "both") with
        | "textpool" -> [ MoeBenchShape.TextPool ]
        | "mixtral-200m" -> [ MoeBenchShape.Mixtral200M ]
        | "both" -> [ MoeBenchShape.TextPool; MoeBenchShape.Mixtral200M ]
        | "smoke" -> [ MoeBenchShape.Smoke ]
        | other -> raise (UsageError $"bench moe: --size '{other}' is not textpool, mixtral-200m, both or smoke")
    let runs = args.GetResult(Runs, defaultValue = 7)
    if runs < 1 then raise (UsageError $"bench moe: --runs {runs} must be at least 1")
    match args.TryGetResult Threads with
    | Some n when n < 1 -> raise (UsageError $"bench moe: --threads {n} must be at least 1")
    | Some n -> TorchSharp.torch.set_num_threads n
    | None -> ()
    let threads = TorchSharp.torch.get_num_threads ()
    let json = args.Contains Json
    let log (s: string) = if not json then printfn "%s" s
    log $"libtorch intra-op threads: {threads}"
    let results = [ for shape in shapes -> MoeBenchmark.Run(shape, runs, min 3 runs, Action<string>(log)) ]
    if json then
        let rows =
            results
            |> List.map (fun r ->
                {| shape = r.Shape
                   threads = threads
                   parameters = r.Parameters
                   router_std = r.RouterStd
                   runs = r.Runs
                   peak_resident_bytes = r.PeakResidentBytes
                   variants =
                    r.Rows
                    |> Seq.map (fun v ->
                        {| routing = v.Variant
                           experts_per_token = v.ExpertsPerToken
                           block_tokens_per_second = v.BlockTokensPerSecond
                           model_tokens_per_second = v.ModelTokensPerSecond |})
                    |> Array.ofSeq |})
        printfn "%s" (JsonSerializer.Serialize(rows, JsonSerializerOptions(WriteIndented = true)))
    else
        printfn ""
        printfn "| model | parameters | routing | experts/token | block tok/s | model tok/s | block speed-up over dense |"
        printfn "|---|---:|---|---:|---:|---:|---:|"
        for r in results do
            let dense = r.Rows |> Seq.find (fun v -> v.Variant = "dense")
            for v in r.Rows do
                printfn "| %s | %s | %s | %.2f | %.0f | %.0f | %.2f× |" r.Shape (r.Parameters.ToString("N0")) v.Variant v.ExpertsPerToken
                    v.BlockTokensPerSecond v.ModelTokensPerSecond (v.BlockTokensPerSecond / dense.BlockTokensPerSecond)
    ExitCode.Ok
