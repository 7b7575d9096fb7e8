/// `mergedsl plan <recipe> <inputs>`: compile a recipe against the inputs' headers and show what a
/// merge would do, without reading any tensor data.
module MergeDsl.Cli.Commands.Plan

open System
open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Partitioning
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure
open MergeDsl.Cli.Commands.MergeArgs

/// A summary of a plan, as printed and as JSON.
type PlanSummary =
    { Recipe: string
      Parameters: Collections.Generic.IDictionary<string, string>
      Expression: string
      Models: string list
      Tensors: int
      CopiedTensors: int
      Nodes: int
      OpCounts: Collections.Generic.IDictionary<string, int>
      Phases: string list
      BytesReadMerge: int64
      BytesReadStatistics: int64
      BytesWritten: int64
      LargestTensorWorkingBytes: int64
      EstimatedPeakBytes: int64 }

/// Summarises a compiled plan. Peak memory is estimated as the largest tensor's working set plus the
/// executor's prefetch and write-queue budgets (each capped by what there is to read or write).
let summarize (plan: MergePlan) (options: MergeOptions) : PlanSummary =
    let ops =
        plan.Tensors
        |> Seq.collect (fun t -> t.Nodes)
        |> Seq.countBy (fun n -> string n.Op)
        |> Seq.sortByDescending snd
        |> Seq.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v))
        |> Collections.Generic.Dictionary
    let phases =
        [ if plan.Groups.Count > 0 then
              let members = plan.Groups |> Seq.sumBy (fun g -> g.Members |> Seq.map (fun struct (t, _) -> t) |> Seq.distinct |> Seq.length)
              $"statistics: {plan.Groups.Count} global top-k group(s) over {members} tensors, 2 streaming passes each ({ByteSize.Format plan.StatisticsBytesRead} read)"
          $"merge: {plan.Tensors.Count} tensors streamed, {ByteSize.Format plan.MergeBytesRead} read, {ByteSize.Format plan.BytesWritten} written" ]
    let estimate =
        plan.PeakWorkingBytes + min options.MaxPrefetchBytes plan.MergeBytesRead + min options.MaxPendingWriteBytes plan.BytesWritten
    { Recipe = plan.Recipe.Name
      Parameters = Collections.Generic.Dictionary<string, string>(plan.Recipe.Parameters)
      Expression = plan.Recipe.Describe()
      Models = [ for i in 0 .. plan.Models.Count - 1 -> (if plan.HasBase && i = 0 then "base   " else "expert ") + "'" + plan.Models[i].Label + "'" ]
      Tensors = plan.Tensors.Count
      CopiedTensors = plan.Tensors |> Seq.filter (fun t -> t.IsCopy) |> Seq.length
      Nodes = plan.NodeCount
      OpCounts = ops
      Phases = phases
      BytesReadMerge = plan.MergeBytesRead
      BytesReadStatistics = plan.StatisticsBytesRead
      BytesWritten = plan.BytesWritten
      LargestTensorWorkingBytes = plan.PeakWorkingBytes
      EstimatedPeakBytes = estimate }

/// Prints a plan summary for people.
let print (s: PlanSummary) =
    let ps = if s.Parameters.Count = 0 then "" else " (" + String.Join(", ", s.Parameters |> Seq.map (fun kv -> $"{kv.Key}={kv.Value}")) + ")"
    printfn "recipe: %s%s" s.Recipe ps
    for line in s.Expression.Split('\n') do
        printfn "  %s" line
    printfn "models:"
    for m in s.Models do
        printfn "  %s" m
    printfn "phases:"
    s.Phases |> List.iteri (fun i p -> printfn "  %d. %s" (i + 1) p)
    printfn "tensors: %d (%d copied unchanged), graph nodes: %d" s.Tensors s.CopiedTensors s.Nodes
    printfn "ops: %s" (String.Join(", ", s.OpCounts |> Seq.map (fun kv -> $"{kv.Key} {kv.Value}")))
    printfn "bytes read: %s (merge) + %s (statistics)" (ByteSize.Format s.BytesReadMerge) (ByteSize.Format s.BytesReadStatistics)
    printfn "bytes written: %s" (ByteSize.Format s.BytesWritten)
    printfn "estimated peak memory: %s (largest tensor's working set %s + prefetch and write queues)" (ByteSize.Format s.EstimatedPeakBytes) (ByteSize.Format s.LargestTensorWorkingBytes)

/// A partition of the plan into parts, as printed and as JSON.
type PartitionSummary =
    { Parts: int
      Shards: int
      ShardLimitBytes: int64
      NeedsStatisticsStep: bool
      Partition: Partition }

/// Prints a partition for people: one line per part, then the steps to run.
let printPartition (s: PartitionSummary) =
    let size = ByteSize.Format
    printfn ""
    printfn "partition: %d part(s) of %d shard(s) (at most %s each), balanced by bytes read + computed:" s.Parts s.Shards (size s.ShardLimitBytes)
    for part in s.Partition.Parts do
        let names = part.Shards |> Seq.map (fun i -> string (i + 1))
        printfn "  part %d: shards %s: %d tensors, read %s, compute %s, write %s" part.Index (String.Join(", ", names)) part.Tensors
            (size part.BytesRead) (size part.BytesComputed) (size part.BytesWritten)
    let total = s.Partition.Parts |> Seq.sumBy (fun p -> p.Cost)
    let worst = s.Partition.Parts |> Seq.map (fun p -> p.Cost) |> Seq.max
    if total > 0L then printfn "  largest part: %.0f%% of the work (ideal %.0f%%)" (100.0 * float worst / float total) (100.0 / float s.Parts)
    printfn "steps (every worker sees the inputs and OUT's parent folder at the same paths; use the same command line):"
    if s.NeedsStatisticsStep then
        printfn "  0. mergedsl run <these arguments> --out OUT --stats    (once: whole-model statistics -> OUT.parts/stats.json)"
    printfn "  1. mergedsl run <these arguments> --out OUT --part I/%d    for I = 0..%d, in any order, on any workers (or --part auto/%d)" s.Parts (s.Parts - 1) s.Parts
    printfn "  2. mergedsl finalize OUT    (checks every part, writes the index, model card and config, removes OUT.parts)"

/// Prints the plan of a request and, with `parts`, its partition.
let showParts (req: MergeJob.Request) (json: bool) (detail: int) (parts: int option) =
    use p = MergeJob.prepare { req with Out = None }
    let s = summarize p.Plan p.Options
    let partition =
        parts
        |> Option.map (fun n ->
            let shardBytes = p.WriterOptions.MaxShardBytes
            let partition = Partition.Of(p.Plan, shardBytes, n)
            { Parts = n; Shards = partition.Shards.Count; ShardLimitBytes = shardBytes; NeedsStatisticsStep = p.Plan.Groups.Count > 0
              Partition = partition })
    let options = JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase)
    if json then
        match partition with
        | Some ps -> printfn "%s" (JsonSerializer.Serialize({| plan = s; partition = ps |}, options))
        | None -> printfn "%s" (JsonSerializer.Serialize(s, options))
    else
        print s
        if detail > 0 then
            printfn ""
            // Tensor names come from the checkpoints: escaped line by line.
            for line in (p.Plan.Describe detail).Split('\n') do
                printfn "%s" (MergeDsl.Core.Text.TerminalText.Sanitize line)
        partition |> Option.iter printPartition

/// Prints the plan of a request (shared with standalone recipe scripts).
let show (req: MergeJob.Request) (json: bool) (detail: int) = showParts req json detail None

/// Entry point for `mergedsl plan`.
let run (args: ParseResults<MergeArgs.Args>) : int =
    match MergeArgs.inChildForScript "plan" args with
    | Some code -> code
    | None ->
    for flag, given in [ "--part", args.Contains Part; "--stats", args.Contains Stats; "--resume", args.Contains Resume ] do
        if given then raise (UsageError $"{flag}: only `mergedsl run` takes it; `plan --parts N` shows the partition")
    showParts (MergeArgs.request args None) (args.Contains Json) (args.GetResult(Tensors, defaultValue = 0)) (args.TryGetResult Parts)
    ExitCode.Ok
