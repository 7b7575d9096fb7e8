/// The one progress bar of the CLI, on stderr, for work that takes longer than a moment (merges,
/// adaptation). Quick work, --quiet, --json and redirected stderr show nothing, so scripts and logs stay clean.
module MergeDsl.Cli.Jobs.Progress

open System
open System.Threading
open System.Threading.Tasks
open Spectre.Console
open MergeDsl.Core.Adaptation
open MergeDsl.Core.Execution

/// One reading of a job's progress: its phase (a new phase starts a new bar), how far it is in the
/// phase's own unit, and the text shown beside the bar.
type Reading =
    { Phase: string
      Done: float
      Total: float
      Label: string }

/// How long work may run before a bar appears.
let private grace = TimeSpan.FromMilliseconds 700.0

/// Runs `work`, handing it a progress callback whose reports `read` turns into readings; shows a bar
/// when `show` and the work outlasts the grace period.
let track (show: bool) (read: 'P -> Reading) (work: Action<'P> -> 'T) : 'T =
    if not show || Console.IsErrorRedirected then
        work (Action<'P>(ignore))
    else
        let mutable latest: Reading option = None
        let report = Action<'P>(fun p -> Volatile.Write(&latest, Some(read p)))
        let job = Task.Run(fun () -> work report)
        if not (job.Wait grace) then
            let console = AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Error)))
            console
                .Progress()
                .AutoClear(true)
                .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), RemainingTimeColumn(), SpinnerColumn())
                .Start(fun ctx ->
                    let bars = Collections.Generic.Dictionary<string, ProgressTask>()
                    let update () =
                        match Volatile.Read(&latest) with
                        | Some r ->
                            let bar =
                                match bars.TryGetValue r.Phase with
                                | true, b -> b
                                | _ ->
                                    for b in bars.Values do
                                        b.Value <- b.MaxValue
                                    let b = ctx.AddTask(r.Phase, true, max 1.0 r.Total)
                                    bars[r.Phase] <- b
                                    b
                            bar.Description <- r.Label
                            bar.Value <- r.Done
                        | None -> ()
                    while not (job.Wait 100) do
                        update ()
                    update ())
        job.GetAwaiter().GetResult()

/// A merge's bar: bytes of each phase, with tensors counted beside it.
let merge (show: bool) (work: Action<MergeProgress> -> 'T) : 'T =
    track show (fun (p: MergeProgress) ->
        { Phase = p.Phase; Done = float p.BytesDone; Total = float p.BytesTotal; Label = $"{p.Phase} {p.TensorsDone}/{p.TensorsTotal} tensors" }) work

/// An adaptation's bar: steps, with the objective beside it.
let adaptation (show: bool) (steps: int) (work: Action<AdaptStep> -> 'T) : 'T =
    track (show && steps > 0) (fun (s: AdaptStep) ->
        { Phase = "adapting"; Done = float s.Step; Total = float steps; Label = $"step {s.Step}/{steps} objective {s.Loss:F4}" }) work
