/// A progress bar on stderr for merges that take longer than a moment. Quick merges, --quiet,
/// --json and redirected stderr show nothing, so scripts and logs stay clean.
module MergeDsl.Cli.Progress

open System
open System.Threading
open System.Threading.Tasks
open Spectre.Console
open MergeDsl.Core.Execution

/// How long a merge may run before a bar appears.
let private grace = TimeSpan.FromMilliseconds 700.0

/// Runs `work`, handing it a progress callback; shows a bar when `show` and the work outlasts the grace period.
let run (show: bool) (work: Action<MergeProgress> -> 'T) : 'T =
    if not show || Console.IsErrorRedirected then
        work (Action<MergeProgress>(ignore))
    else
        let mutable latest: MergeProgress option = None
        let report = Action<MergeProgress>(fun p -> Volatile.Write(&latest, Some p))
        let job = Task.Run(fun () -> work report)
        if not (job.Wait grace) then
            let console = AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Error)))
            console
                .Progress()
                .AutoClear(true)
                .Columns(
                    TaskDescriptionColumn(),
                    ProgressBarColumn(),
                    PercentageColumn(),
                    RemainingTimeColumn(),
                    SpinnerColumn()
                )
                .Start(fun ctx ->
                    let tasks = Collections.Generic.Dictionary<string, ProgressTask>()
                    let update () =
                        match Volatile.Read(&latest) with
                        | Some p ->
                            let task =
                                match tasks.TryGetValue p.Phase with
                                | true, t -> t
                                | _ ->
                                    for t in tasks.Values do
                                        t.Value <- t.MaxValue
                                    let t = ctx.AddTask(p.Phase, true, float (max 1L p.BytesTotal))
                                    tasks[p.Phase] <- t
                                    t
                            task.Description <- $"{p.Phase} {p.TensorsDone}/{p.TensorsTotal} tensors"
                            task.Value <- float p.BytesDone
                        | None -> ()
                    while not (job.Wait 100) do
                        update ()
                    update ())
        job.GetAwaiter().GetResult()
