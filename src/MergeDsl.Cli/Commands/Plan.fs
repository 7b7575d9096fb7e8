/// `mergedsl plan <recipe> <inputs>`: compile a recipe against the inputs' headers and show what a
/// merge would do, without reading any tensor data.
module MergeDsl.Cli.Commands.Plan

open System
open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Cli
open MergeDsl.Cli.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Recipe of recipe: string
    | Base of dir: string
    | [<AltCommandLine("-m")>] Model of dir: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Set of assignment: string
    | Device of device: string
    | Dtype of dtype: string
    | Shard_Size of size: string
    | Seed of n: int64
    | Allow_Nonfinite
    | Force
    | [<AltCommandLine("-q")>] Quiet
    | Tensors of count: int
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Recipe _ -> "a built-in method or an .fsx recipe script (as for run)."
            | Base _ -> "the base model folder."
            | Model _ -> "a fine-tuned model folder; repeat for each model."
            | Out _ -> "accepted (and ignored) so a run command line can be planned as is."
            | Set _ -> "a recipe parameter, name=value; repeatable."
            | Device _ -> "auto, cpu or cuda (checked only)."
            | Dtype _ -> "output dtype: f32, f16 or bf16."
            | Shard_Size _ -> "accepted (and ignored), as for run."
            | Seed _ -> "seed of random masks."
            | Allow_Nonfinite -> "accepted (and ignored), as for run."
            | Force -> "accepted (and ignored), as for run."
            | Quiet -> "accepted (and ignored), as for run."
            | Tensors _ -> "also list the op graph of the first N tensors."
            | Json -> "print the plan as JSON."

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

/// Prints the plan of a request (shared with standalone recipe scripts).
let show (req: MergeJob.Request) (json: bool) (detail: int) =
    use p = MergeJob.prepare { req with Out = None }
    let s = summarize p.Plan p.Options
    if json then printfn "%s" (JsonSerializer.Serialize(s, JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase)))
    else
        print s
        if detail > 0 then
            printfn ""
            printfn "%s" (p.Plan.Describe detail)

/// Entry point for `mergedsl plan`.
let run (args: ParseResults<Args>) : int =
    let req =
        { Run.request (args.GetResult Recipe) (args.TryGetResult Base) (args.GetResults Model) None (args.GetResults Set) with
            Device = args.GetResult(Device, defaultValue = "auto")
            DType = args.TryGetResult Dtype
            Seed = args.TryGetResult Seed }
    let recipe = args.GetResult Recipe
    let req = if Mergekit.isConfig recipe then Mergekit.apply req recipe else req
    show req (args.Contains Json) (args.GetResult(Tensors, defaultValue = 0))
    ExitCode.Ok
