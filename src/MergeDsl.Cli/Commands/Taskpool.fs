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
    | Seed of seed: int
    | Threads of count: int
    | Wemoe_Lr of lr: float
    | Wemoe_Steps of steps: int
    | Wemoe_Batch of images: int
    | Objective of objective: string
    | Diversity of weight: float
    | Methods of names: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Quick -> "CI mode: data subsets and few steps; every stage still runs."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); the model zoo is cached in <data>/zoo."
            | Out _ -> "report folder (default results/taskpool)."
            | Seed _ -> "seed of the zoo and of adaptation (default 42)."
            | Threads _ -> "torch CPU threads (default 1: the model is tiny; more threads only help on an idle machine)."
            | Wemoe_Lr _ -> "learning rate of WEMoE/E-WEMoE router adaptation (default 1e-4)."
            | Wemoe_Steps _ -> "steps of every WEMoE row's router adaptation (default 400, expert distillation 1000; --quick 10)."
            | Wemoe_Batch _ -> "unlabelled test images per task per step of WEMoE/E-WEMoE adaptation (default 16)."
            | Diversity _ -> "weight of the diversity term of the entropy-diversity objective (default 1)."
            | Objective _ -> "what test-time adaptation (AdaMerging, WEMoE, E-WEMoE) minimises: entropy or entropy-diversity (default)."
            | Methods _ -> "comma-separated methods to run (names as in the table, e.g. \"WEMoE,Oracle routing\"); default all."

/// Renders the result table with Spectre.Console.
let printTable (r: BenchmarkResult) =
    let table = Table().Border(TableBorder.Rounded)
    table.AddColumn("Method") |> ignore
    for t in r.Tasks do
        table.AddColumn(TableColumn(Markup.Escape t).RightAligned()) |> ignore
    table.AddColumn(TableColumn("[bold]Avg.[/]").RightAligned()) |> ignore
    table.AddColumn(TableColumn("s").RightAligned()) |> ignore
    for m in r.Methods do
        let cells =
            [ yield Markup.Escape m.Method
              for a in m.Accuracy -> sprintf "%.1f" a
              yield sprintf "[bold]%.1f[/]" m.Average
              yield sprintf "%.1f" m.Seconds ]
        table.AddRow(cells |> List.toArray) |> ignore
    AnsiConsole.Write table
    let t = BenchmarkReports.Targets r
    AnsiConsole.MarkupLine(
        sprintf "WEMoE recovers [bold]%.1f%%[/] of the TA-to-Individual gap; oracle routing - WEMoE = %.1f points; total %.1f min"
            (t.GapRecovered * 100.0) t.OracleGap t.TotalMinutes)
    AnsiConsole.MarkupLine(
        sprintf "WEMoE with expert distillation recovers [bold]%.1f%%[/]; oracle routing - it = %.1f points"
            (t.DistilledGapRecovered * 100.0) t.DistilledOracleGap)
    AnsiConsole.MarkupLine(Markup.Escape(sprintf "ordering: %s" t.Ordering))

/// Grouped bars: per method, one bar per task and a dark bar for the average.
let writePlot (r: BenchmarkResult) (path: string) =
    Plots.groupedBars
        [ for m in r.Methods -> m.Method ]
        [ for t in r.Tasks -> t, None
          yield "average", Some ScottPlot.Colors.Black ]
        [ for m in r.Methods -> [| yield! m.Accuracy; yield m.Average |] ]
        "top-1 accuracy (%)"
        (sprintf "Task pool: %d tasks, tiny CLIP ViT%s" r.Tasks.Count (if r.Quick then " (--quick)" else ""))
        (0.0, 115.0)
        path

/// Runs the benchmark and writes the reports; returns the result.
let executeWith (dataRoot: string) (outDir: string) (quick: bool) (seed: int) (log: string -> unit) (overrides: BenchmarkOverrides) =
    let options = BenchmarkOptions.Create(dataRoot, quick, seed, Action<string> log, overrides)
    let result = TaskPoolBenchmark.Run options
    Directory.CreateDirectory outDir |> ignore
    BenchmarkReports.WriteJson(result, Path.Combine(outDir, "results.json"))
    BenchmarkReports.WriteMarkdown(result, Path.Combine(outDir, "results.md"))
    writePlot result (Path.Combine(outDir, "results.png"))
    result

/// Runs the benchmark with default settings and writes the reports.
let execute dataRoot outDir quick seed log = executeWith dataRoot outDir quick seed log (BenchmarkOverrides())

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
    let seed = args.TryGetResult Seed |> Option.defaultValue 42
    let threads = args.TryGetResult Threads |> Option.defaultValue 1
    if threads < 1 then raise (UsageError(sprintf "--threads: expected a positive count, got %d" threads))
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads threads
    try
        let log (line: string) = AnsiConsole.MarkupLine("[grey]" + Markup.Escape line + "[/]")
        let result = executeWith dataRoot outDir (args.Contains Quick) seed log (overridesOf args)
        printTable result
        printfn "reports: %s" (String.Join(", ", [ "results.json"; "results.md"; "results.png" ] |> List.map (fun f -> Path.Combine(outDir, f))))
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed
