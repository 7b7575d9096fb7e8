/// `mergedsl bench stream`: merge speed against the I/O floor, measured in the same run.
///
/// Each measured step (the copy floor, the merge) runs in a child process of its own
/// (`mergedsl bench stream-step ...`), so its wall time covers a whole job and its peak resident set
/// (VmHWM) is its own, not mixed with generating data or with the other step.
module MergeDsl.Cli.Commands.Bench

open System
open System.IO
open System.Text.Json
open Argu
open MergeDsl.Core.Memory
open MergeDsl.Bench.Streaming
open Spectre.Console
open MergeDsl.Core.Checkpoints
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

type StreamArgs =
    | Size of size: string
    | Experts of count: int
    | Method of name: string
    | Dir of path: string
    | Runs of count: int
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Size _ -> "tensor data per model, e.g. 2GB, 500MB (default 2GB)."
            | Experts _ -> "number of experts besides the base (default 4)."
            | Method _ -> "task-arithmetic or ties (default task-arithmetic)."
            | Dir _ -> "where the synthetic checkpoints live; reused when present (default .mergedsl/bench)."
            | Runs _ -> "times each step runs; the last run is reported as warm (default 2)."
            | Json -> "print a machine-readable summary."

type StepArgs =
    | [<Mandatory>] Step of name: string
    | [<Mandatory>] Dir of path: string
    | [<Mandatory>] Experts of count: int
    | Method of name: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Step _ -> "copy or merge."
            | Dir _ -> "zoo folder."
            | Experts _ -> "number of experts."
            | Method _ -> "merge method."

type Args =
    | [<CliPrefix(CliPrefix.None)>] Stream of ParseResults<StreamArgs>
    | [<CliPrefix(CliPrefix.None); Hidden>] Stream_Step of ParseResults<StepArgs>
    | [<CliPrefix(CliPrefix.None)>] Taskpool of ParseResults<Taskpool.Args>
    | [<CliPrefix(CliPrefix.None)>] Decoder of ParseResults<BenchDecoder.Args>
    | [<CliPrefix(CliPrefix.None)>] Textpool of ParseResults<Textpool.Args>
    | [<CliPrefix(CliPrefix.None)>] Textscale of ParseResults<Textscale.Args>
    | [<CliPrefix(CliPrefix.None)>] Moe of ParseResults<BenchMoe.Args>
    | [<CliPrefix(CliPrefix.None)>] Textmoe of ParseResults<TextMoe.Args>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Stream _ -> "streaming merge of synthetic f32 checkpoints vs. a plain copy of the same bytes."
            | Stream_Step _ -> "(internal) one measured step, run in a child process."
            | Decoder _ -> "decoder LLM runtime: scoring and KV-cache generation tokens/s, peak memory (tiny and ~100M Llama)."
            | Taskpool _ -> "merge-method benchmark on real data (MNIST/Fashion tasks, tiny CLIP): table, JSON, Markdown, PNG."
            | Textpool _ -> "merge-method benchmark on real text (Debian fortunes, KJV, C headers, man pages; tiny byte-level Llama): bits per byte."
            | Textscale _ -> "merging at scale on the text pool: widths, weak/strong base, 2-7 experts; Average, TA, TIES, WEMoE."
            | Moe _ -> "sparse MoE runtime: tokens/s of grouped top-1/top-2/top-p dispatch against every expert run densely."
            | Textmoe _ -> "upcycled sparse mixtures (mergekit-moe) of the text zoo's experts: gate modes x top-1/top-2/top-p x shared expert."

/// One measured step, as the child reports it on its last stdout line.
type StepResult =
    { Step: string
      Seconds: float
      BytesRead: int64
      BytesWritten: int64
      PeakRssBytes: int64
      PeakAnonBytes: int64
      PeakFileBytes: int64
      /// Merge only: executor stage times (see MergeJob.Summary); 0 for the copy.
      InputWaitSeconds: float
      ComputeSeconds: float
      OutputSeconds: float
      CommitSeconds: float }

let private methods = [ "task-arithmetic"; "ties" ]

let private zooFolders (dir: string) (experts: int) =
    Path.Combine(dir, "base"), [ for i in 1..experts -> Path.Combine(dir, $"expert-{i}") ]

let private deleteIfExists (path: string) =
    if Directory.Exists path then Directory.Delete(path, true)

/// Runs one step in this process and returns what it measured.
let runStep (step: string) (dir: string) (experts: int) (methodName: string) : StepResult =
    let baseDir, expertDirs = zooFolders dir experts
    let files = baseDir :: expertDirs |> List.map (fun d -> Path.Combine(d, "model.safetensors"))
    for f in files do
        if not (File.Exists f) then raise (UsageError $"--dir: {f} is missing; run `mergedsl bench stream` first")
    use sampler = new ResidentSampler()
    match step with
    | "copy" ->
        let out = Path.Combine(dir, "out-copy")
        deleteIfExists out
        let r = CopyFloor.Run(files, Path.Combine(out, "model.safetensors"))
        deleteIfExists out
        { Step = "copy"; Seconds = r.Seconds; BytesRead = r.BytesRead; BytesWritten = r.BytesWritten
          PeakRssBytes = PeakMemory.PeakResidentBytes(); PeakAnonBytes = sampler.PeakAnonymousBytes
          PeakFileBytes = sampler.PeakFileBackedBytes; InputWaitSeconds = 0.0; ComputeSeconds = 0.0; OutputSeconds = 0.0
          CommitSeconds = 0.0 }
    | "merge" ->
        let out = Path.Combine(dir, "out-merge")
        deleteIfExists out
        let clock = Diagnostics.Stopwatch.StartNew()
        let summary =
            MergeJob.run
                { MergeJob.Request.Default with
                    Recipe = JobInputs.recipeSource methodName
                    Base = Some baseDir
                    Models = expertDirs
                    Out = Some out
                    Quiet = true }
        clock.Stop()
        let written = Directory.GetFiles(out, "*.safetensors") |> Array.sumBy (fun f -> FileInfo(f).Length)
        deleteIfExists out
        { Step = "merge"; Seconds = clock.Elapsed.TotalSeconds; BytesRead = summary.BytesRead
          BytesWritten = written; PeakRssBytes = PeakMemory.PeakResidentBytes(); PeakAnonBytes = sampler.PeakAnonymousBytes
          PeakFileBytes = sampler.PeakFileBackedBytes; InputWaitSeconds = summary.InputWaitSeconds
          ComputeSeconds = summary.ComputeSeconds; OutputSeconds = summary.OutputSeconds; CommitSeconds = summary.CommitSeconds }
    | other -> raise (UsageError $"--step: unknown step '{other}' (expected copy or merge)")

let private runChild (step: string) (dir: string) (experts: int) (methodName: string) : StepResult =
    let code, out, err =
        ChildProcess.runSelf [ "bench"; "stream-step"; "--step"; step; "--dir"; dir; "--experts"; string experts; "--method"; methodName ]
    if code <> 0 then
        failwithf "bench: the %s step failed (exit %d): %s" step code (err.Trim())
    let last = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.last
    JsonSerializer.Deserialize<StepResult>(last)

let private gb (bytes: int64) = float bytes / 1e9

let private stream (args: ParseResults<StreamArgs>) =
    let size = ByteSize.Parse(args.GetResult(StreamArgs.Size, defaultValue = "2GB"))
    let experts = args.GetResult(StreamArgs.Experts, defaultValue = 4)
    let methodName = args.GetResult(StreamArgs.Method, defaultValue = "task-arithmetic")
    if not (List.contains methodName methods) then
        raise (UsageError $"--method: unknown method '{methodName}' (expected task-arithmetic or ties)")
    let dir = Path.GetFullPath(args.GetResult(StreamArgs.Dir, defaultValue = Path.Combine(".mergedsl", "bench")))
    let runs = args.GetResult(StreamArgs.Runs, defaultValue = 2)
    if runs < 1 then raise (UsageError "--runs: must be at least 1")
    let json = args.Contains StreamArgs.Json
    let log (s: string) = if not json then eprintfn "%s" s
    let spec = SyntheticZooSpec(size, experts)
    let dirForSize = Path.Combine(dir, $"{size}B-x{experts}")
    let zoo = SyntheticCheckpoints.Ensure(dirForSize, spec, Action<string>(log))
    log (if zoo.Reused then $"reusing synthetic checkpoints in {dirForSize}" else $"wrote synthetic checkpoints to {dirForSize}")
    // Alternate copy and merge so both see the same page-cache state on every round.
    let results =
        [ for round in 1..runs do
              for step in [ "copy"; "merge" ] do
                  log $"round {round}/{runs}: {step}"
                  round, runChild step dirForSize experts methodName ]
    let lastOf (prefix: string) =
        results |> List.filter (fun (r, s) -> r = runs && s.Step = prefix) |> List.exactlyOne |> snd
    let floor = lastOf "copy"
    let merge = lastOf "merge"
    let ratio = merge.Seconds / floor.Seconds
    let rate (s: StepResult) = gb (s.BytesRead + s.BytesWritten) / s.Seconds
    if json then
        let payload =
            {| size = size; experts = experts; method = methodName; runs = runs
               cache = "warm (inputs read in an earlier round; the page cache was not dropped)"
               results = results |> List.map (fun (r, s) -> {| round = r; step = s.Step; seconds = s.Seconds; bytesRead = s.BytesRead; bytesWritten = s.BytesWritten; peakRssBytes = s.PeakRssBytes; peakAnonBytes = s.PeakAnonBytes; peakFileBytes = s.PeakFileBytes; inputWaitSeconds = s.InputWaitSeconds; computeSeconds = s.ComputeSeconds; outputSeconds = s.OutputSeconds; commitSeconds = s.CommitSeconds |})
               ratioToFloor = ratio |}
        printfn "%s" (JsonSerializer.Serialize(payload, JsonSerializerOptions(WriteIndented = true)))
    else
        let table = Spectre.Console.Table()
        for c in [ "round"; "step"; "wall s"; "read GB"; "written GB"; "GB/s"; "peak RSS MB"; "anon MB"; "file MB"; "x floor" ] do
            table.AddColumn(c) |> ignore
        let floorOf r = results |> List.find (fun (rr, s) -> rr = r && s.Step = "copy") |> snd
        for r, s in results do
            let f = floorOf r
            table.AddRow(
                string r, s.Step, $"%.2f{s.Seconds}", $"%.2f{gb s.BytesRead}", $"%.2f{gb s.BytesWritten}",
                $"%.2f{rate s}", $"%.0f{float s.PeakRssBytes / 1e6}", $"%.0f{float s.PeakAnonBytes / 1e6}",
                $"%.0f{float s.PeakFileBytes / 1e6}", $"%.2f{s.Seconds / f.Seconds}") |> ignore
        // Logs and docs capture this table; do not wrap it at the 80 columns of a redirected stdout.
        if Console.IsOutputRedirected then AnsiConsole.Profile.Width <- 140
        AnsiConsole.Write table
        let cache =
            if runs > 1 then $"round {runs} is warm (page cache not dropped)"
            else "single round: inputs are cached only as far as earlier runs left them"
        printfn "%d experts + base, %s each (f32), method %s; %s." experts (ByteSize.Format size) methodName cache
        printfn "GB/s = (bytes read + bytes written) / wall time. Peak RSS is the kernel's VmHWM (it counts pages of the"
        printfn "memory-mapped inputs); anon and file are the sampled peaks of its anonymous and file-backed parts."
        printfn "merge stages (round %d): compute %.2f s, waiting for inputs %.2f s, output (finite check, conversion, write queue) %.2f s, commit (fsync + rename) %.2f s"
            runs merge.ComputeSeconds merge.InputWaitSeconds merge.OutputSeconds merge.CommitSeconds
        printfn "merge / copy floor (warm): %.2fx; merge peak RSS %.0f MB (anon %.0f MB)" ratio (float merge.PeakRssBytes / 1e6) (float merge.PeakAnonBytes / 1e6)
    ExitCode.Ok

let private streamStep (args: ParseResults<StepArgs>) =
    let r =
        runStep (args.GetResult StepArgs.Step) (args.GetResult StepArgs.Dir) (args.GetResult StepArgs.Experts)
            (args.GetResult(StepArgs.Method, defaultValue = "task-arithmetic"))
    printfn "%s" (JsonSerializer.Serialize r)
    ExitCode.Ok

/// Entry point for `mergedsl bench ...`.
let run (args: ParseResults<Args>) : int =
    match args.TryGetResult Stream, args.TryGetResult Stream_Step, args.TryGetResult Taskpool with
    | Some s, _, _ -> stream s
    | _, Some s, _ -> streamStep s
    | _, _, Some t -> Taskpool.run t
    | None, None, None ->
        match args.TryGetResult Decoder, args.TryGetResult Textpool with
        | Some d, _ -> BenchDecoder.run d
        | _, Some t -> Textpool.run t
        | None, None ->
            match args.TryGetResult Moe, args.TryGetResult Textmoe with
            | Some m, _ -> BenchMoe.run m
            | _, Some t -> TextMoe.run t
            | None, None ->
                match args.TryGetResult Textscale with
                | Some t -> Textscale.run t
                | None -> raise (UsageError "bench: expected a benchmark name: stream, taskpool, textpool, textscale, decoder, moe or textmoe")
