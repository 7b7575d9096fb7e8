/// `mergedsl bench textmoe`: upcycled sparse mixtures of the text zoo's experts (mergekit-moe's job) per gate mode,
/// routing (top-1, top-2, top-p with p chosen on validation text) and shared expert, scored like the text pool
/// (see docs/results-text.md, "Sparse mixtures"); writes results.json, results.md and results.png.
module MergeDsl.Cli.Commands.TextMoe

open System
open System.IO
open System.Text.Json
open Argu
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextPool
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Quick
    | Data of dir: string
    | Out of dir: string
    | Seed of seed: int
    | Threads of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Quick -> "CI mode: the text pool's --quick zoo and text sizes."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); the zoo is the text pool's (<data>/textzoo)."
            | Out _ -> "report folder (default results/textmoe); the upcycled models go to <out>/models."
            | Seed _ -> "the zoo's seed (default 42)."
            | Threads _ -> "torch CPU threads (default 1)."

let private plot (r: TextMoeResult) (path: string) =
    let values =
        [ for row in r.Rows ->
              let struct (hin, hout) = TextMoeBenchmark.Averages(r, row)
              [| hin; hout |] ]
    let top = values |> Seq.collect id |> Seq.filter Double.IsFinite |> Seq.max
    Plots.groupedBars
        [ for row in r.Rows -> row.Method ]
        [ "held-in avg.", Some ScottPlot.Colors.Black; "held-out avg.", Some ScottPlot.Colors.DimGray ]
        values
        "bits per byte (test text, lower is better)"
        (sprintf "Upcycled sparse mixtures of the text zoo, seed %d%s" r.Seed (if r.Quick then " (--quick)" else ""))
        (0.0, top * 1.15)
        path

/// Entry point for `mergedsl bench textmoe`.
let run (args: ParseResults<Args>) =
    let dataRoot = args.TryGetResult Data |> Option.defaultWith DataStore.DefaultRoot
    let outDir = args.TryGetResult Out |> Option.defaultValue (Path.Combine("results", "textmoe"))
    let threads = args.TryGetResult Threads |> Option.defaultValue 1
    if threads < 1 then raise (UsageError(sprintf "--threads: expected a positive count, got %d" threads))
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads threads
    let log (line: string) = eprintfn "%s" line
    let options =
        try TextPoolOptions.Create(dataRoot, args.Contains Quick, [ args.GetResult(Seed, defaultValue = 42) ], Action<string> log)
        with :? ArgumentException as e -> raise (UsageError e.Message)
    try
        let result = TextMoeBenchmark.Run(options, Path.Combine(outDir, "models"))
        File.WriteAllText(Path.Combine(outDir, "results.json"), (TextMoeBenchmark.ToJson result).ToJsonString(JsonSerializerOptions(WriteIndented = true)))
        let md = TextMoeBenchmark.ToMarkdown result
        File.WriteAllText(Path.Combine(outDir, "results.md"), md)
        plot result (Path.Combine(outDir, "results.png"))
        printf "%s" md
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed
