/// `mergedsl bench taskpool`: the task-pool benchmark on real data (see docs/results.md): trains or reuses
/// the model zoo, evaluates every merge method on every task, prints the table and writes results.json,
/// results.md and results.png.
module MergeDsl.Cli.Commands.Taskpool

open System
open System.IO
open Argu
open Spectre.Console
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TaskPool
open MergeDsl.Core.Adaptation
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Quick
    | Data of dir: string
    | Out of dir: string
    | Seeds of seeds: string
    | Threads of count: int
    | Wemoe_Lr of lr: float
    | Wemoe_Steps of steps: int
    | Wemoe_Batch of images: int
    | Objective of objective: string
    | Diversity of weight: float
    | Methods of names: string
    | Combine of reports: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Quick -> "CI mode: data subsets and few steps; every stage still runs."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); the model zoo is cached in <data>/zoo."
            | Out _ -> "report folder (default results/taskpool)."
            | Seeds _ -> "comma-separated seeds, one zoo and one set of method seeds each; reports show mean ± standard deviation (default 42,43,44; --quick 42)."
            | Threads _ -> "torch CPU threads (default 1: the model is tiny; more threads only help on an idle machine)."
            | Wemoe_Lr _ -> "learning rate of every WEMoE row's router adaptation (default: chosen on validation from 1e-4, 1e-3)."
            | Wemoe_Steps _ -> "steps of every WEMoE row's router adaptation (default 400; --quick 10)."
            | Wemoe_Batch _ -> "unlabelled test images per task per step of WEMoE/E-WEMoE adaptation (default 16)."
            | Diversity _ -> "weight of the diversity term of the entropy-diversity objective (default 1)."
            | Objective _ -> "what test-time adaptation (AdaMerging, WEMoE, E-WEMoE) minimises: entropy or entropy-diversity (default: chosen on validation)."
            | Methods _ -> "comma-separated methods to run (names as in the table, e.g. \"WEMoE,Oracle routing\"); default all."
            | Combine _ -> "comma-separated report folders (or results.json files) of runs with other seeds: writes their one table to --out instead of running."

/// Renders the result table with Spectre.Console.
let printTable (r: BenchmarkResult) =
    let table = Table().Border(TableBorder.Rounded)
    table.AddColumn("Method") |> ignore
    for t in r.Tasks do
        table.AddColumn(TableColumn(Markup.Escape t).RightAligned()) |> ignore
    table.AddColumn(TableColumn("[bold]Avg.[/]").RightAligned()) |> ignore
    table.AddColumn(TableColumn("s").RightAligned()) |> ignore
    let many = r.Runs.Count > 1
    for m in r.Methods do
        let struct (perTask, average) = r.Spread m.Method
        let cell (mean: float) (std: float) = if many then sprintf "%.1f ± %.1f" mean std else sprintf "%.1f" mean
        let cells =
            [ yield Markup.Escape m.Method
              for i, a in Seq.indexed m.Accuracy -> cell a perTask[i]
              yield "[bold]" + cell m.Average average + "[/]"
              yield sprintf "%.1f" m.Seconds ]
        table.AddRow(cells |> List.toArray) |> ignore
    AnsiConsole.Write table
    let t = BenchmarkReports.Targets r
    for line in t.Lines() do
        AnsiConsole.MarkupLine(Markup.Escape line)
    AnsiConsole.MarkupLine(sprintf "run time %.1f min (sum over seeds)" t.TotalMinutes)

/// Grouped bars: per method, one bar per task and a dark bar for the average (means over seeds, error bars: one
/// standard deviation over seeds).
let writePlot (r: BenchmarkResult) (path: string) =
    let seeds = r.Runs |> Seq.map (fun x -> string x.Seed) |> String.concat ","
    Plots.groupedBarsWithErrors
        [ for m in r.Methods -> m.Method ]
        [ for t in r.Tasks -> t, None
          yield "average", Some ScottPlot.Colors.Black ]
        [ for m in r.Methods -> [| yield! m.Accuracy; yield m.Average |] ]
        [ for m in r.Methods ->
            let struct (per, avg) = r.Spread m.Method
            [| yield! per; yield avg |] ]
        "top-1 test accuracy (%), mean ± std over seeds"
        (sprintf "Task pool: %d tasks, tiny CLIP ViT, %s %s%s; %s" r.Tasks.Count (if r.Runs.Count > 1 then "seeds" else "seed") seeds (if r.Quick then " (--quick)" else "")
            (match r.Settings.TryGetValue "cpu" with | true, c -> c | _ -> ""))
        (0.0, 115.0)
        path

/// Writes results.json, results.md and results.png of `result` into `outDir`.
let writeReports (outDir: string) (result: BenchmarkResult) =
    Directory.CreateDirectory outDir |> ignore
    BenchmarkReports.WriteJson(result, Path.Combine(outDir, "results.json"))
    BenchmarkReports.WriteMarkdown(result, Path.Combine(outDir, "results.md"))
    writePlot result (Path.Combine(outDir, "results.png"))

/// Reads the reports named in `text` (folders holding results.json, or the files), combines their seeds into one
/// result and writes its reports into `outDir`; one-line errors name the report at fault.
let combine (text: string) (outDir: string) =
    let result = CombineArgs.combined BenchmarkCombine.Read (fun parts -> BenchmarkCombine.Combine parts) text outDir
    writeReports outDir result
    result

/// Runs the benchmark for every seed and writes the reports; returns the result.
let executeSeeds (dataRoot: string) (outDir: string) (quick: bool) (seeds: int list) (log: string -> unit) (overrides: BenchmarkOverrides) =
    let options = BenchmarkOptions.Create(dataRoot, quick, Collections.Generic.List<int>(seeds), Action<string> log, overrides)
    let result = TaskPoolBenchmark.Run options
    writeReports outDir result
    result

/// Runs the benchmark for one seed and writes the reports; returns the result.
let executeWith dataRoot outDir quick (seed: int) log overrides = executeSeeds dataRoot outDir quick [ seed ] log overrides

/// Runs the benchmark for one seed with default settings and writes the reports.
let execute dataRoot outDir quick seed log = executeWith dataRoot outDir quick seed log (BenchmarkOverrides())

/// Parses "42,43,44".
let parseSeeds (text: string) =
    text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
    |> Array.map (fun s ->
        match Int32.TryParse s with
        | true, v -> v
        | _ -> raise (UsageError(sprintf "--seeds: expected comma-separated integers, got '%s'" text)))
    |> Array.toList

let private overridesOf (args: ParseResults<Args>) =
    BenchmarkOverrides(
        WemoeLr = Option.toNullable (args.TryGetResult Wemoe_Lr),
        WemoeSteps = Option.toNullable (args.TryGetResult Wemoe_Steps),
        WemoeBatch = Option.toNullable (args.TryGetResult Wemoe_Batch),
        Objective = Option.toNullable (args.TryGetResult Objective |> Option.map (fun o -> EntropyObjective.Parse o)),
        DiversityWeight = Option.toNullable (args.TryGetResult Diversity),
        Methods =
            (args.TryGetResult Methods
             |> Option.map (fun s ->
                 Collections.Generic.HashSet<string>(s.Split(',') |> Seq.map (fun m -> m.Trim()) |> Seq.filter ((<>) ""))
                 :> Collections.Generic.IReadOnlySet<string>)
             |> Option.toObj))

let run (args: ParseResults<Args>) =
    let dataRoot = args.TryGetResult Data |> Option.defaultWith DataStore.DefaultRoot
    let outDir = args.TryGetResult Out |> Option.defaultValue (Path.Combine("results", "taskpool"))
    let quick = args.Contains Quick
    let seeds = args.TryGetResult Seeds |> Option.map parseSeeds |> Option.defaultValue (if quick then [ 42 ] else [ 42; 43; 44 ])
    let threads = args.TryGetResult Threads |> Option.defaultValue 1
    if threads < 1 then raise (UsageError(sprintf "--threads: expected a positive count, got %d" threads))
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads threads
    try
        let log (line: string) = AnsiConsole.MarkupLine("[grey]" + Markup.Escape line + "[/]")
        let result =
            match args.TryGetResult Combine with
            | Some reports -> combine reports outDir
            | None -> executeSeeds dataRoot outDir quick seeds log (overridesOf args)
        printTable result
        printfn "reports: %s" (String.Join(", ", [ "results.json"; "results.md"; "results.png" ] |> List.map (fun f -> Path.Combine(outDir, f))))
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed
