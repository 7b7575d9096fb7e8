/// `mergedsl bench decoder`: tokens/s of the decoder runtime (scoring; generation with the KV cache at several
/// lengths, and without it) and peak memory, on random weights written to a temporary folder.
module MergeDsl.Cli.Commands.BenchDecoder

open System
open System.IO
open System.Text.Json
open Argu
open MergeDsl.Bench.Decoder
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Size of name: string
    | Lengths of counts: string
    | Dir of path: string
    | Threads of count: int
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Size _ -> "tiny, llama-100m or both (default both)."
            | Lengths _ -> "generation lengths, comma-separated (default 64,256,512)."
            | Dir _ -> "where the random model folders are written (default the temp folder)."
            | Threads _ -> "libtorch intra-op threads (default: libtorch's choice, one per core); 1 avoids thread hand-off stalls on a busy machine."
            | Json -> "print JSON results."

let private log' json (s: string) = if not json then printfn "%s" s

/// Entry point for `mergedsl bench decoder`.
let run (args: ParseResults<Args>) : int =
    let shapes =
        match args.GetResult(Size, defaultValue = "both") with
        | "tiny" -> [ DecoderBenchShape.Tiny ]
        | "llama-100m" -> [ DecoderBenchShape.Llama100M ]
        | "both" -> [ DecoderBenchShape.Tiny; DecoderBenchShape.Llama100M ]
        | other -> raise (UsageError $"bench decoder: --size '{other}' is not tiny, llama-100m or both")
    let lengths =
        args.GetResult(Lengths, defaultValue = "64,256,512").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.map (fun s ->
            match Int32.TryParse s with
            | true, n when n > 0 -> n
            | _ -> raise (UsageError $"bench decoder: --lengths entry '{s}' is not a positive integer"))
    if lengths.Length = 0 then raise (UsageError "bench decoder: --lengths is empty")
    let dir = args.GetResult(Dir, defaultValue = Path.GetTempPath())
    if not (Directory.Exists dir) then raise (UsageError $"bench decoder: --dir {dir} does not exist")
    match args.TryGetResult Threads with
    | Some n when n < 1 -> raise (UsageError $"bench decoder: --threads {n} must be at least 1")
    | Some n -> TorchSharp.torch.set_num_threads n
    | None -> ()
    let threads = TorchSharp.torch.get_num_threads ()
    let json = args.Contains Json
    log' json $"libtorch intra-op threads: {threads}"
    let log (s: string) = if not json then printfn "%s" s
    let results =
        [ for shape in shapes ->
              let longest = Array.max lengths + 16
              if longest > shape.Config.MaxPositionEmbeddings then
                  raise (UsageError $"bench decoder: --lengths up to {Array.max lengths} exceed the {shape.Name} model's {shape.Config.MaxPositionEmbeddings} positions")
              DecoderBenchmark.Run(shape, dir, lengths, log = Action<string>(log)) ]
    if json then
        let rows =
            results
            |> List.map (fun r ->
                {| shape = r.Shape
                   threads = threads
                   parameters = r.Parameters
                   load_seconds = r.LoadSeconds
                   score_tokens_per_second = r.ScoreTokensPerSecond
                   score_batch = r.ScoreBatch
                   score_length = r.ScoreLength
                   generation = r.Generation |> Seq.map (fun struct (n, t) -> {| new_tokens = n; tokens_per_second = t |}) |> Array.ofSeq
                   no_cache_tokens_per_second = r.NoCacheTokensPerSecond
                   peak_resident_bytes = r.PeakResidentBytes |})
        printfn "%s" (JsonSerializer.Serialize(rows, JsonSerializerOptions(WriteIndented = true)))
    else
        printfn ""
        printfn "| model | parameters | scoring tok/s | %s | no cache (%d new) tok/s | peak RSS |"
            (lengths |> Array.map (fun n -> $"generate {n} tok/s") |> String.concat " | ") (Array.min lengths)
        printfn "|---|---:|---:|%s---:|---:|" (String.replicate lengths.Length "---:|")
        for r in results do
            printfn "| %s | %s | %.0f | %s | %.1f | %s |" r.Shape (r.Parameters.ToString("N0")) r.ScoreTokensPerSecond
                (r.Generation |> Seq.map (fun struct (_, t) -> sprintf "%.1f" t) |> String.concat " | ")
                r.NoCacheTokensPerSecond (MergeDsl.Core.Checkpoints.ByteSize.Format r.PeakResidentBytes)
    ExitCode.Ok
