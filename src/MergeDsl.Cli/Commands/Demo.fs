/// `mergedsl demo`: merges real experts on real data (the task pool's tiny CLIP experts on MNIST and
/// Fashion-MNIST tasks) and shows per-task accuracy of the pretrained model, each expert, and the merges;
/// with --distances, the older demo: a small synthetic zoo, its tensors, and L2 distances of merges.
module MergeDsl.Cli.Commands.Demo

open System
open System.Diagnostics
open System.IO
open Argu
open Spectre.Console
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Bench.Data
open MergeDsl.Bench.Demo
open MergeDsl.Bench.TaskPool
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

type DemoArgs =
    | Out of dir: string
    | Data of dir: string
    | Quick
    | Seed of seed: int
    | Distances
    | Shard_Size of size: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Out _ -> "folder for the plot and reports (default ./.mergedsl/demo); with --distances, for the synthetic zoo."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); the trained zoo is cached in <data>/zoo."
            | Quick -> "the task pool's --quick setting (small zoo, few steps): checks that everything runs; its experts barely learn."
            | Seed _ -> "seed of the zoo and of WEMoE's adaptation (default 42)."
            | Distances -> "the older demo instead: a small synthetic zoo, its tensor table, and L2 distances of merges."
            | Shard_Size _ -> "with --distances: shard size of the last expert, written sharded to show sharding (default 32KB)."

/// The older demo: the synthetic zoo, its sharded expert's tensors, L2 distances of merges.
let private distances (args: ParseResults<DemoArgs>) =
    let folder = args.GetResult(Out, defaultValue = Path.Combine(".mergedsl", "demo"))
    let shardBytes = ByteSize.Parse(args.GetResult(Shard_Size, defaultValue = "32KB"))
    let out = Inspect.console ()
    let models = DemoZoo.Build(folder, DemoZooConfig(), shardBytes)
    out.WriteLine(sprintf "Model zoo in %s:" (Path.GetFullPath folder))
    for m in models do
        use cp = Checkpoint.Open(m.Folder)
        let t = Inspect.totals cp
        out.WriteLine(
            sprintf "  %-9s %-8s %d tensors, %d parameters, %s in %d shard(s)"
                m.Name (if m.Reused then "reused" else "written") t.Tensors t.Parameters (ByteSize.Format t.Bytes) t.Shards)
    let sharded = models |> Seq.tryFind (fun m -> m.Sharded)
    match sharded with
    | Some m ->
        out.WriteLine()
        out.WriteLine(sprintf "%s, sharded at %s:" m.Name (ByteSize.Format shardBytes))
        use cp = Checkpoint.Open(m.Folder)
        Inspect.printTable out cp
    | None -> ()
    DemoMerges.print out models
    0

/// Column headings of the demo's rows, short enough for an 80-column terminal.
let private heading =
    function
    | "Simple Average" -> "Average"
    | "Task Arithmetic" -> "TA"
    | "TIES-Merging" -> "TIES"
    | m -> m

/// Tasks down, methods across, and a last row of averages.
let private table (r: BenchmarkResult) =
    let t = Table().Border(TableBorder.Rounded)
    t.AddColumn("task (accuracy %)") |> ignore
    for m in r.Methods do
        t.AddColumn(TableColumn(heading m.Method).RightAligned()) |> ignore
    r.Tasks
    |> Seq.iteri (fun i task ->
        t.AddRow(Array.ofList (Markup.Escape task :: [ for m in r.Methods -> sprintf "%.1f" m.Accuracy[i] ])) |> ignore)
    t.AddRow(Array.ofList ("[bold]average[/]" :: [ for m in r.Methods -> sprintf "[bold]%.1f[/]" m.Average ])) |> ignore
    t

/// What the hyper-parameters were, from the rows' own configuration.
let private settingsLine (r: BenchmarkResult) =
    let config m key =
        r.Find(m)
        |> Option.ofObj
        |> Option.bind (fun row -> match row.Config.TryGetValue key with | true, v -> Some v | _ -> None)
        |> Option.defaultValue "?"
    sprintf "Settings chosen on %s validation images per task (held out of the test images and of everything the zoo trained on), from the task pool's %s grid: TA lambda %s; TIES lambda %s, density %s; WEMoE routers adapted %s steps, lr %s, objective %s, on unlabelled test images."
        r.Settings["validation_images_per_task"]
        (if r.Quick then "--quick" else "full-run")
        (config "Task Arithmetic" "lambda") (config "TIES-Merging" "lambda") (config "TIES-Merging" "density")
        (config "WEMoE" "steps") (config "WEMoE" "lr") (config "WEMoE" "objective")

/// Runs the task pool with a progress bar read from its log lines: training the zoo (first run only:
/// pretraining steps, then one expert per task), then one step per row. Without a bar (stderr redirected,
/// as under CI or `| tee`), the stage lines go to stderr so a long first run still shows signs of life.
let private withProgress (tasks: int) (rows: int) (work: (string -> unit) -> 'T) : 'T =
    let pretrain = Text.RegularExpressions.Regex(@"^pretrain step (\d+)/(\d+)")
    let quiet = Console.IsErrorRedirected
    Progress.track true id (fun (report: Action<Progress.Reading>) ->
        let pretrained = ref 0.0
        let experts = ref 0
        let rowsDone = ref 0
        let log (line: string) =
            // A stage line of a row the demo leaves out reads "[name] 0.0 s": noise.
            if quiet && line.StartsWith "[" && not (line.EndsWith "] 0.0 s") then eprintfn "%s" line
            let m = pretrain.Match line
            if m.Success then
                pretrained.Value <- float m.Groups[1].Value / float m.Groups[2].Value
            elif line.StartsWith "expert " then
                experts.Value <- experts.Value + 1
            elif TaskPoolDemo.Methods |> Seq.exists (fun name -> line.StartsWith(name + ": avg")) then
                rowsDone.Value <- rowsDone.Value + 1
            if line.StartsWith "[zoo" || rowsDone.Value > 0 then
                report.Invoke
                    { Phase = "rows"; Done = float rowsDone.Value; Total = float rows
                      Label = sprintf "merging and evaluating: %d/%d rows" rowsDone.Value rows }
            elif pretrained.Value > 0.0 || experts.Value > 0 then
                report.Invoke
                    { Phase = "zoo"; Done = 50.0 * pretrained.Value + 50.0 * float experts.Value / float tasks; Total = 100.0
                      Label = sprintf "training the zoo (first run only): %d/%d experts" experts.Value tasks }
        work log)

/// The task-pool demo.
let private merges (args: ParseResults<DemoArgs>) =
    let dataRoot = args.TryGetResult Data |> Option.defaultWith DataStore.DefaultRoot
    let outDir = args.GetResult(Out, defaultValue = Path.Combine(".mergedsl", "demo"))
    let quick = args.Contains Quick
    let seed = args.GetResult(Seed, defaultValue = 42)
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads 1
    let out = Inspect.console ()
    out.WriteLine(
        sprintf "Merging %d tiny CLIP experts, each fine-tuned on one MNIST / Fashion-MNIST task, with %s (%s)."
            TaskPoolTasks.All.Count (String.Join(", ", TaskPoolDemo.Methods |> Seq.skip 2)) (if quick then "--quick setting" else "full task-pool setting"))
    let clock = Stopwatch.StartNew()
    let result = withProgress TaskPoolTasks.All.Count TaskPoolDemo.Methods.Count (fun log -> Taskpool.executeWith dataRoot outDir quick seed log (TaskPoolDemo.Overrides()))
    clock.Stop()
    out.WriteLine()
    out.Write(table result)
    out.WriteLine(TaskPoolDemo.Headline result)
    out.WriteLine(
        sprintf "Pretrained: the shared base; Individual: each task's own expert; the other columns: one merged model for all %d tasks, on up to %d test images per task."
            result.Tasks.Count (int result.Settings["test_images_per_task"]))
    out.WriteLine(settingsLine result)
    if result.Quick then
        out.WriteLine "(--quick trains its experts for a few dozen steps: these numbers show that every stage runs, not what merging achieves; drop --quick for that.)"
    out.WriteLine(sprintf "Plot: %s (reports: results.json, results.md beside it)" (Path.GetFullPath(Path.Combine(outDir, "results.png"))))
    out.WriteLine(
        sprintf "Models (CLIP folders for mergedsl run/eval): %s; zoo %s; demo took %.0f s."
            result.ZooFolder
            (if result.ZooFromCache then "from the cache"
             else sprintf "trained now in %.0f s and cached" (result.Stages |> Seq.filter (fun struct (s, _) -> s.StartsWith "zoo") |> Seq.sumBy (fun struct (_, sec) -> sec)))
            clock.Elapsed.TotalSeconds)
    ExitCode.Ok

let run (args: ParseResults<DemoArgs>) : int =
    if args.Contains Distances then
        distances args
    else
        if args.Contains Shard_Size then raise (UsageError "--shard-size: only with --distances (the synthetic zoo)")
        merges args
