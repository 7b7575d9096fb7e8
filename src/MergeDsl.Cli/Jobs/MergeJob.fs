/// One merge, start to finish, as `run`, `bench` and standalone recipe scripts do it: resolve and
/// check everything first (recipe, parameters, folders, headers, compiled plan), then stream the
/// merge into a temporary folder that becomes --out only when every tensor and the model card are
/// written. Any failure leaves nothing at --out.
module MergeDsl.Cli.Jobs.MergeJob

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Ir
open MergeDsl.Core.Partitioning
open MergeDsl.Core.Torch
open MergeDsl.Cli.Jobs.Failure

/// Which share of a merge one run does: all of it, the statistics step of a partitioned merge, or one part.
type Share =
    | Whole
    | StatisticsStep
    /// Part `index` (0-based) of `count`.
    | Part of index: int * count: int

/// What the command line asked for.
type Request =
    { Recipe: JobInputs.RecipeSource
      Base: string option
      Models: string list
      Out: string option
      Settings: (string * string) list
      Device: string
      DType: string option
      ShardSize: string option
      Seed: int64 option
      AllowNonFinite: bool
      /// Copy tensors that some expert lacks from the base instead of failing (--missing-from-base).
      MissingFromBase: bool
      Force: bool
      Quiet: bool
      CommandLine: string
      /// --stats / --part I/N: one share of a partitioned merge.
      Share: Share
      /// --resume: continue the verified shards of a killed run of the same merge.
      Resume: bool
      /// --max-memory: a cap on the executor's budgets, checked against the plan.
      MaxMemory: string option
      /// The output tokenizer a mergekit configuration asks for (vocabulary alignment, chat template).
      Tokenizer: OutputTokenizer.Request option }


    static member Default =
        { Recipe = JobInputs.BuiltIn "average"; Base = None; Models = []; Out = None; Settings = []; Device = "auto"
          DType = None; ShardSize = None; Seed = None; AllowNonFinite = false; MissingFromBase = false; Force = false; Quiet = false
          CommandLine = ""; Share = Whole; Resume = false; MaxMemory = None; Tokenizer = None }

/// What a finished merge reports (also the --json summary).
type Summary =
    { Recipe: string
      Parameters: IDictionary<string, string>
      Out: string
      Tensors: int
      BytesRead: int64
      BytesWritten: int64
      Seconds: float
      Device: string
      PeakRssBytes: int64
      /// Where the executor's time went: waiting for inputs, evaluating graphs, output (finite
      /// check, conversion, write queue), and the writer's commit (fsync of every shard + rename).
      InputWaitSeconds: float
      ComputeSeconds: float
      OutputSeconds: float
      CommitSeconds: float
      /// Shards kept from a killed run (--resume) and tensors not computed here (another part's, or resumed).
      ResumedShards: int
      TensorsSkipped: int }

/// `--dtype` text to a dtype.
let parseDType (text: string) =
    match text.Trim().ToLowerInvariant() with
    | "f32" | "float32" | "fp32" -> DType.F32
    | "f16" | "float16" | "fp16" | "half" -> DType.F16
    | "bf16" | "bfloat16" -> DType.BF16
    | _ -> raise (UsageError $"--dtype: unknown dtype '{text}' (expected f32, f16 or bf16)")

/// `--part` text: `I/N` (0 <= I < N) or `auto/N`, where I comes from Slurm's SLURM_ARRAY_TASK_ID or a Kubernetes
/// Indexed Job's JOB_COMPLETION_INDEX.
let parsePart (text: string) : int * int =
    let bad () = raise (UsageError $"--part: '{text}' is not I/N or auto/N (e.g. 0/4)")
    match text.Split('/') with
    | [| i; n |] ->
        let count = match Int32.TryParse n with | true, v when v >= 1 -> v | _ -> bad ()
        let index =
            if i.Trim().ToLowerInvariant() = "auto" then
                let fromEnv name = Environment.GetEnvironmentVariable name |> Option.ofObj |> Option.filter (fun v -> v.Trim() <> "") |> Option.map (fun v -> name, v)
                match fromEnv "SLURM_ARRAY_TASK_ID" |> Option.orElse (fromEnv "JOB_COMPLETION_INDEX") with
                | Some(name, v) ->
                    match Int32.TryParse v with
                    | true, k -> k
                    | _ -> raise (UsageError $"--part auto/{count}: {name} is '{v}', not a part index")
                | None -> raise (UsageError $"--part auto/{count}: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set (give the index: --part I/{count})")
            else match Int32.TryParse i with | true, v -> v | _ -> bad ()
        if index < 0 || index >= count then
            raise (UsageError $"--part {text}: the part index is {index}, but parts are numbered 0 to {count - 1} (Slurm: --array=0-{count - 1})")
        index, count
    | _ -> bad ()

/// `--max-memory` text to bytes.
let parseMemory (text: string) : int64 =
    let n = try ByteSize.Parse text with :? ArgumentException -> raise (UsageError $"--max-memory: '{text}' is not a size (e.g. 4GB, 500MB)")
    if n <= 0L then raise (UsageError $"--max-memory: must be positive, got '{text}'")
    n

/// Everything checked and compiled; disposing closes the inputs.
type Prepared =
    { Request: Request
      Resolved: JobInputs.ResolvedRecipe
      Opened: JobInputs.Opened
      Plan: MergePlan
      Options: MergeOptions
      WriterOptions: CheckpointWriterOptions
      /// The reserved (locked) --out, when one was given.
      Output: OutputFolder option }
    interface IDisposable with
        member this.Dispose() =
            (this.Opened :> IDisposable).Dispose()
            this.Output |> Option.iter (fun o -> o.Dispose())

let private labels (opened: JobInputs.Opened) (req: Request) =
    let expertLabels = JobInputs.expertLabels req.Models
    let baseLabel =
        req.Base
        |> Option.map (fun b ->
            let n = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath b))
            if List.contains n expertLabels then "base" else n)
    let b = Option.map2 (fun (c: ITensorSource) l -> NamedSource(l, c)) opened.Base baseLabel
    let es = List.map2 (fun (c: ITensorSource) l -> NamedSource(l, c)) opened.Models expertLabels
    MergeInputs(Option.toObj b, es |> Array.ofList)

let private prepareReserved (req: Request) (resolved: JobInputs.ResolvedRecipe) dtype shard deviceChoice (output: OutputFolder option) : Prepared =
    let device = DeviceChoice.Resolve deviceChoice
    let opened = JobInputs.openAll { Base = req.Base; Models = req.Models; Out = req.Out; Force = req.Force }
    try
        let tokenizer = OutputTokenizer.prepare req.Tokenizer (labels opened req)
        let plan = Compiler.Compile(resolved.Recipe, tokenizer.Inputs, CompileOptions(OutputDType = Option.toNullable dtype, TakeMissingFromBase = req.MissingFromBase))
        let options = MergeOptions(Device = device, Seed = defaultArg resolved.Seed 0L, AllowNonFinite = req.AllowNonFinite)
        // Checked here, so `plan` reports a cap too small for the largest tensor before anything is read.
        let options = match req.MaxMemory with Some m -> MemoryCap.Apply(plan, options, parseMemory m) | None -> options
        let writerOptions =
            CheckpointWriterOptions(
                MaxShardBytes = defaultArg shard (CheckpointWriterOptions().MaxShardBytes),
                CopyFilesFrom = Option.toObj tokenizer.CopyFrom,
                ExtraFiles = readOnlyDict (Map.toList tokenizer.Files),
                SkipCopiedFiles = Collections.Generic.HashSet<string>(tokenizer.Skip),
                CopyFilesAlso = (tokenizer.AlsoCopy |> List.map (fun (f, n) -> struct (f, n)) |> Array.ofList))
        { Request = req; Resolved = resolved; Opened = opened; Plan = plan; Options = options; WriterOptions = writerOptions
          Output = output }
    with _ ->
        (opened :> IDisposable).Dispose()
        reraise ()

/// Resolves, checks, opens and compiles; raises a one-line error on the first problem found.
let prepare (req: Request) : Prepared =
    let resolved = JobInputs.resolveRecipe req.Recipe req.Settings req.Seed req.Models.Length
    let dtype = req.DType |> Option.map parseDType
    let shard =
        req.ShardSize
        |> Option.map (fun s ->
            let n = try ByteSize.Parse s with :? ArgumentException -> raise (UsageError $"--shard-size: '{s}' is not a size (e.g. 5GB, 500MB)")
            if n <= 0L then raise (UsageError $"--shard-size: must be positive, got '{s}'")
            n)
    let deviceChoice = DeviceChoice.Parse req.Device
    let inputs: JobInputs.Inputs = { Base = req.Base; Models = req.Models; Out = req.Out; Force = req.Force }
    JobInputs.checkInputs inputs resolved
    req.MaxMemory |> Option.iter (parseMemory >> ignore)
    let reserve target overwrite =
        try OutputFolder.Reserve(target, overwrite, JobInputs.outputInputs inputs, "use --force", req.Resume)
        with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")
    // Locked before anything heavy (torch, headers, compiling), so a second run to the same --out stops at once.
    // A part writes (and a rerun replaces) only its own folder under OUT.parts; the statistics step only a file there.
    let output =
        match req.Out, req.Share with
        | Some out, Whole -> Some(reserve out req.Force)
        | Some out, Part(i, n) -> Some(reserve (PartFolders.PartFolder(out, i, n)) true)
        | _ -> None
    try
        prepareReserved req resolved dtype shard deviceChoice output
    with _ ->
        output |> Option.iter (fun o -> o.Dispose())
        reraise ()

let private provenance (p: Prepared) : ModelCard.MergeProvenance =
    { Recipe = p.Plan.Recipe.Name
      RecipeSource = p.Resolved.Origin
      Parameters = [ for kv in p.Plan.Recipe.Parameters -> kv.Key, kv.Value ] @ (match p.Resolved.Seed with Some s when not (p.Plan.Recipe.Parameters.ContainsKey "seed") -> [ "seed", string s ] | _ -> [])
      Base = p.Request.Base |> Option.map JobInputs.describeModel
      Models = p.Request.Models |> List.map JobInputs.describeModel
      Expression = p.Plan.Recipe.Describe()
      CommandLine = p.Request.CommandLine
      DType = p.Request.DType }

/// Fault injection for tests and drills: with MERGEDSL_FAULT_HOLD_AFTER_SHARDS=K, the run stops making progress (its
/// writer thread sleeps) once it has finished K shards, so that it can be killed at a known point.
let private holdAfterShards () : (ShardRecord -> unit) option =
    match Environment.GetEnvironmentVariable "MERGEDSL_FAULT_HOLD_AFTER_SHARDS" |> Option.ofObj |> Option.map Int32.TryParse with
    | Some(true, k) when k >= 0 ->
        let finished = ref 0
        Some(fun _ ->
            if Threading.Interlocked.Increment(&finished.contents) >= k then
                eprintfn "mergedsl: MERGEDSL_FAULT_HOLD_AFTER_SHARDS=%d: holding after %d finished shard(s)" k finished.Value
                Threading.Thread.Sleep Threading.Timeout.Infinite)
    | _ -> None

/// The writer options of a prepared merge: shard size, the CLI's metadata, the model card, --resume and the run's
/// identity (null: none; with one, finished shards are journaled, so a killed run can be resumed).
let private writerOptionsWith (p: Prepared) (output: OutputFolder) (identity: string) =
    let prov = provenance p
    CheckpointWriterOptions(
        Output = output, MaxShardBytes = p.WriterOptions.MaxShardBytes, Metadata = readOnlyDict (ModelCard.metadata prov),
        CopyFilesFrom = p.WriterOptions.CopyFilesFrom,
        SkipCopiedFiles = p.WriterOptions.SkipCopiedFiles,
        CopyFilesAlso = p.WriterOptions.CopyFilesAlso,
        ExtraFiles = readOnlyDict ([ for kv in p.WriterOptions.ExtraFiles -> kv.Key, kv.Value ] @ [ "README.md", ModelCard.render prov ]),
        Resume = p.Request.Resume, RunIdentity = identity,
        ShardCompleted = (holdAfterShards () |> Option.map (fun f -> Action<ShardRecord> f) |> Option.toObj))

/// The writer options of a prepared merge with its run identity.
let private writerOptionsOf (p: Prepared) (output: OutputFolder) : CheckpointWriterOptions * RunIdentity =
    let identity = RunIdentity.Of(p.Plan, p.Options, writerOptionsWith p output null)
    writerOptionsWith p output identity.Hash, identity

/// The executor options with a progress callback.
let private withProgress (p: Prepared) (report: Action<MergeProgress>) =
    let o = p.Options
    MergeOptions(
        Device = o.Device, ComputeDType = o.ComputeDType, Seed = o.Seed, Noise = o.Noise, AllowNonFinite = o.AllowNonFinite,
        MaxPrefetchBytes = o.MaxPrefetchBytes, MaxPendingWriteBytes = o.MaxPendingWriteBytes, ReuseNativeMemory = o.ReuseNativeMemory,
        Progress = report)

/// Runs a prepared merge into its --out folder.
let execute (p: Prepared) (showProgress: bool) : Summary =
    let out =
        match p.Request.Out with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    let clock = Stopwatch.StartNew()
    let output =
        match p.Output with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    let writerOptions, _ = writerOptionsOf p output
    let written = Progress.merge showProgress (fun report -> Merger.Write(p.Plan, out, withProgress p report, writerOptions))
    let stats = written.Stats
    clock.Stop()
    { Recipe = p.Plan.Recipe.Name
      Parameters = Dictionary<string, string>(p.Plan.Recipe.Parameters)
      Out = output.Target
      Tensors = stats.Tensors
      BytesRead = stats.BytesRead
      BytesWritten = stats.BytesWritten
      Seconds = clock.Elapsed.TotalSeconds
      Device = string (defaultArg (Option.ofObj p.Options.Device) TorchSharp.torch.CPU)
      PeakRssBytes = MergeDsl.Core.Memory.PeakMemory.PeakResidentBytes()
      InputWaitSeconds = stats.InputWaitTime.TotalSeconds
      ComputeSeconds = stats.ComputeTime.TotalSeconds
      OutputSeconds = stats.OutputTime.TotalSeconds
      CommitSeconds = written.CommitTime.TotalSeconds
      ResumedShards = written.ResumedShards
      TensorsSkipped = stats.TensorsSkipped }

/// Prepares and executes.
let run (req: Request) : Summary =
    use p = prepare req
    execute p (not req.Quiet)

/// What the statistics step or a part did (also the --json summary).
type ShareSummary =
    { Share: string
      Out: string
      Tensors: int
      Shards: int
      ResumedShards: int
      BytesRead: int64
      BytesWritten: int64
      Seconds: float
      PeakRssBytes: int64 }

let private outOf (req: Request) =
    match req.Out with
    | Some o -> o
    | None -> raise (UsageError "--out: give the folder the merged model will be finalized into")

/// The statistics step: computes the plan's whole-model statistics once and writes them to OUT.parts/stats.json
/// (atomically), for every part to read. A plan without such statistics needs no step: nothing is written.
let runStatistics (req: Request) : ShareSummary =
    use p = prepare req
    let out = outOf req
    let clock = Stopwatch.StartNew()
    let file = PartFolders.StatisticsFile out
    let _, identity = writerOptionsOf p null
    let bytes =
        if p.Plan.Groups.Count = 0 then 0L
        else
            let stats = PlanStatistics.Compute(p.Plan, p.Options, identity.Hash)
            Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
            let temp = $"{file}.tmp-{Guid.NewGuid():N}"
            File.WriteAllText(temp, stats.ToJson())
            File.Move(temp, file, true)
            stats.BytesRead
    { Share = (if p.Plan.Groups.Count = 0 then "statistics (none needed)" else "statistics")
      Out = (if p.Plan.Groups.Count = 0 then "" else file); Tensors = 0; Shards = 0; ResumedShards = 0
      BytesRead = bytes; BytesWritten = 0L; Seconds = clock.Elapsed.TotalSeconds
      PeakRssBytes = MergeDsl.Core.Memory.PeakMemory.PeakResidentBytes() }

/// One part of a partitioned merge: its shards and manifest into OUT.parts/part-I-of-N (a rerun replaces only that).
let runPart (req: Request) (index: int) (count: int) : ShareSummary =
    use p = prepare req
    let out = outOf req
    let clock = Stopwatch.StartNew()
    let output = p.Output |> Option.defaultWith (fun () -> raise (UsageError "--out: give the folder the merged model will be finalized into"))
    let writerOptions, identity = writerOptionsOf p output
    let partition = Partition.Of(p.Plan, writerOptions.MaxShardBytes, count)
    let statistics =
        if p.Plan.Groups.Count = 0 then None
        else
            let file = PartFolders.StatisticsFile out
            if not (File.Exists file) then
                raise (PartitionException $"{file}: missing; this merge needs whole-model statistics: run the statistics step first (the same command with --stats instead of --part)")
            let s = try PlanStatistics.Read file with :? InvalidDataException as e -> raise (PartitionException e.Message)
            if s.Identity <> identity.Hash then
                raise (PartitionException $"{file}: computed for another plan or other inputs; run the statistics step again (--stats)")
            Some s
    let result =
        Progress.merge (not req.Quiet) (fun report ->
            PartRun.Write(p.Plan, partition, index, output, withProgress p report, writerOptions, identity, Option.toObj statistics))
    { Share = $"part {index} of {count}"; Out = output.Target; Tensors = partition.Parts[index].Tensors
      Shards = partition.Parts[index].Shards.Count; ResumedShards = result.ResumedShards
      BytesRead = result.Stats.BytesRead; BytesWritten = result.Manifest.BytesWritten; Seconds = clock.Elapsed.TotalSeconds
      PeakRssBytes = MergeDsl.Core.Memory.PeakMemory.PeakResidentBytes() }
