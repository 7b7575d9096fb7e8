/// `mergedsl bench textpool`: the real-text task pool (see docs/results-text.md): extracts the domains' text from
/// Debian packages, trains or reuses the byte-level Llama zoo, scores every row on every domain's test text
/// with hyper-parameters chosen on validation text, prints the table and writes results.json, results.md and
/// results.png.
module MergeDsl.Cli.Commands.Textpool

open System
open System.IO
open Argu
open Spectre.Console
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextPool
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Quick
    | Data of dir: string
    | Out of dir: string
    | Seeds of seeds: string
    | Threads of count: int
    | Width of width: int
    | Layers of count: int
    | Experts of domains: string
    | Pretrain_Steps of steps: int
    | Finetune_Steps of steps: int
    | Methods of names: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Quick -> "CI mode: a smaller model, less text, fewer steps; every stage still runs."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); text splits in <data>/text, the zoo in <data>/textzoo."
            | Out _ -> "report folder (default results/textpool)."
            | Seeds _ -> "comma-separated seeds, one zoo and one set of rows each; tables show mean ± spread (default 42)."
            | Threads _ -> "torch CPU threads (default 1)."
            | Width _ -> "model width (hidden_size; default 64, --quick 32)."
            | Layers _ -> "decoder layers (default 3, --quick 2)."
            | Experts _ -> "comma-separated held-in domains, one expert each (default en,de,it,es,kjv,c,man)."
            | Pretrain_Steps _ -> "generic pretraining steps (default 500, --quick 80): a weaker or stronger base."
            | Finetune_Steps _ -> "fine-tuning steps per expert (default 120, --quick 40)."
            | Methods _ -> "comma-separated rows to run after Pretrained and Individual (names as in the table, e.g. \"WEMoE,SMILE\"); default all."

/// Renders the bits-per-byte table with Spectre.Console.
let printTable (r: TextPoolResult) =
    let table = Table().Border(TableBorder.Rounded)
    table.AddColumn("Method") |> ignore
    let cols = TextPoolReports.Columns(r, r.Methods[0]) |> Seq.map (fun c -> c.Name) |> Seq.toList
    for c in cols do
        table.AddColumn(TableColumn(Markup.Escape c).RightAligned()) |> ignore
    for m in r.Methods do
        let cells =
            [ yield Markup.Escape m
              for c in TextPoolReports.Columns(r, m) ->
                  let struct (mean, std) = MergeDsl.Bench.TaskPool.SeedStatistics.MeanStd(c.BitsPerByte)
                  if r.Runs.Count > 1 then sprintf "%.3f±%.3f" mean std else sprintf "%.3f" mean ]
        table.AddRow(cells |> List.toArray) |> ignore
    AnsiConsole.MarkupLine "bits per byte on test text (lower is better)"
    // Logs and docs capture this table; do not wrap it at the 80 columns of a redirected stdout.
    if Console.IsOutputRedirected then AnsiConsole.Profile.Width <- 200
    AnsiConsole.Write table
    AnsiConsole.MarkupLine(sprintf "total %.1f min" (r.TotalSeconds / 60.0))

/// Grouped bars: per method, one bar per domain's bits per byte and dark bars for the held-in and held-out averages.
let writePlot (r: TextPoolResult) (path: string) =
    let first = TextPoolReports.Columns(r, r.Methods[0])
    let series =
        [ for c in first ->
              match c.Name with
              | n when n = TextPoolReports.HeldInAverage -> "held-in avg.", Some ScottPlot.Colors.Black
              | n when n = TextPoolReports.HeldOutAverage -> "held-out avg.", Some ScottPlot.Colors.DimGray
              | n -> n, None ]
    let values =
        [ for m in r.Methods -> TextPoolReports.Columns(r, m) |> Seq.map (fun c -> let struct (mean, _) = MergeDsl.Bench.TaskPool.SeedStatistics.MeanStd(c.BitsPerByte) in mean) |> Seq.toArray ]
    let top = values |> Seq.collect id |> Seq.filter Double.IsFinite |> Seq.max
    Plots.groupedBars
        (List.ofSeq r.Methods)
        series
        values
        "bits per byte (test text, lower is better)"
        (sprintf "Text pool: %d held-in + %d held-out domains, tiny byte-level Llama, %d seed(s)%s"
            (r.Domains |> Seq.filter (fun d -> not d.HeldOut) |> Seq.length)
            (r.Domains |> Seq.filter (fun d -> d.HeldOut) |> Seq.length)
            r.Runs.Count
            (if r.Quick then " (--quick)" else ""))
        (0.0, top * 1.15)
        path

/// Runs the pool with `options` and writes the reports; returns the result.
let executeWith (outDir: string) (options: TextPoolOptions) =
    let result = TextPoolBenchmark.Run options
    Directory.CreateDirectory outDir |> ignore
    TextPoolReports.WriteJson(result, Path.Combine(outDir, "results.json"))
    TextPoolReports.WriteMarkdown(result, Path.Combine(outDir, "results.md"))
    writePlot result (Path.Combine(outDir, "results.png"))
    result

/// The options of the full pool or its --quick variant, with the command line's changes.
let optionsOf (args: ParseResults<Args>) (dataRoot: string) (log: string -> unit) =
    let seeds = args.TryGetResult Seeds |> Option.map Taskpool.parseSeeds |> Option.defaultValue [ 42 ]
    let overrides =
        TextPoolOverrides(
            Width = Option.toNullable (args.TryGetResult Width),
            Layers = Option.toNullable (args.TryGetResult Layers),
            PretrainSteps = Option.toNullable (args.TryGetResult Pretrain_Steps),
            FineTuneSteps = Option.toNullable (args.TryGetResult Finetune_Steps),
            Experts =
                (args.TryGetResult Experts
                 |> Option.map (fun s -> s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) :> Collections.Generic.IReadOnlyList<string>)
                 |> Option.toObj))
    let options =
        try
            TextPoolOptions.Create(dataRoot, args.Contains Quick, seeds, Action<string> log, overrides)
        with :? ArgumentException as e ->
            raise (UsageError e.Message)
    match args.TryGetResult Methods with
    | None -> options
    | Some text ->
        let names = text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        let known = TextPoolBenchmark.Rows options |> Seq.map (fun p -> p.Method) |> Set.ofSeq
        for n in names do
            if not (known.Contains n) then
                raise (UsageError(sprintf "--methods: unknown row '%s' (rows: %s)" n (String.Join(", ", known))))
        options.WithMethods(Collections.Generic.HashSet<string>(names))

let run (args: ParseResults<Args>) =
    let dataRoot = args.TryGetResult Data |> Option.defaultWith DataStore.DefaultRoot
    let outDir = args.TryGetResult Out |> Option.defaultValue (Path.Combine("results", "textpool"))
    let threads = args.TryGetResult Threads |> Option.defaultValue 1
    if threads < 1 then raise (UsageError(sprintf "--threads: expected a positive count, got %d" threads))
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads threads
    let log (line: string) = AnsiConsole.MarkupLine("[grey]" + Markup.Escape line + "[/]")
    let options = optionsOf args dataRoot log
    try
        let result = executeWith outDir options
        printTable result
        printfn "reports: %s" (String.Join(", ", [ "results.json"; "results.md"; "results.png" ] |> List.map (fun f -> Path.Combine(outDir, f))))
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed
