/// The merging half of `mergedsl demo`: merges the demo zoo with several methods in memory and
/// shows how far each result lies from the base and from each expert (L2 distance over all
/// parameters), which is what the methods differ in: average and TA land between the experts,
/// TIES/DARE keep the large task-vector entries, SLERP(t=0.5) sits midway between two experts.
module MergeDsl.Cli.Jobs.DemoMerges

open System
open System.Diagnostics
open Spectre.Console
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Execution
open MergeDsl.Bench.Demo

/// One merged method and its distances.
type Row =
    { Method: string
      Seconds: float
      ToBase: float
      ToExperts: float list }

/// Merges the zoo with each method and returns the rows (base first as a reference row).
let run (models: DemoModel seq) : Row list =
    let models = List.ofSeq models
    let baseDir = (models |> List.find (fun m -> m.Name = "base")).Folder
    let experts = models |> List.filter (fun m -> m.Name <> "base") |> List.map (fun m -> m.Folder)
    use baseCp = Checkpoint.Open baseDir
    let expertCps = experts |> List.map Checkpoint.Open
    try
        let methods =
            [ "average", None, experts, []
              "task-arithmetic", Some baseDir, experts, [ "lambda", "0.3" ]
              "ties", Some baseDir, experts, [ "density", "0.2"; "lambda", "1" ]
              "dare-ties", Some baseDir, experts, [ "density", "0.5"; "lambda", "1" ]
              "slerp", None, List.truncate 2 experts, [ "t", "0.5" ] ]
        [ for name, b, ms, sets in methods ->
              let req =
                  { MergeJob.Request.Default with
                      Recipe = JobInputs.BuiltIn name
                      Base = b
                      Models = ms
                      Settings = sets
                      Device = "cpu"
                      Seed = Some 42L }
              use p = MergeJob.prepare req
              use sink = new MemorySink()
              let clock = Stopwatch.StartNew()
              Executor.Run(p.Plan, sink, p.Options) |> ignore
              clock.Stop()
              let label = if sets.IsEmpty then name else name + " (" + String.Join(", ", sets |> List.map (fun (k, v) -> $"{k}={v}")) + ")"
              let label = if name = "slerp" then label + " of experts 1, 2" else label
              { Method = label
                Seconds = clock.Elapsed.TotalSeconds
                ToBase = ModelDistance.L2(sink.Tensors, baseCp)
                ToExperts = expertCps |> List.map (fun e -> ModelDistance.L2(sink.Tensors, e)) } ]
    finally
        for c in expertCps do
            c.Dispose()

/// Prints the table.
let print (out: IAnsiConsole) (models: DemoModel seq) =
    let rows = run models
    let experts = models |> Seq.filter (fun m -> m.Name <> "base") |> Seq.map (fun m -> m.Name) |> List.ofSeq
    let table = Table()
    table.AddColumn("method") |> ignore
    table.AddColumn(TableColumn("time ms").RightAligned()) |> ignore
    table.AddColumn(TableColumn("L2 to base").RightAligned()) |> ignore
    for e in experts do
        table.AddColumn(TableColumn($"L2 to {e}").RightAligned()) |> ignore
    for r in rows do
        let cells =
            [ r.Method; $"%.1f{r.Seconds * 1000.0}"; $"%.4f{r.ToBase}" ] @ (r.ToExperts |> List.map (fun d -> $"%.4f{d}"))
        table.AddRow(Array.ofList cells) |> ignore
    out.WriteLine()
    out.WriteLine "Merges of the zoo (in memory; L2 = Euclidean distance over all parameters):"
    out.Write table
