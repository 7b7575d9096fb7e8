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
open MergeDsl.Core.Torch
open MergeDsl.Cli.Jobs.Failure

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
      /// The output tokenizer a mergekit configuration asks for (vocabulary alignment, chat template).
      Tokenizer: OutputTokenizer.Request option }

    static member Default =
        { Recipe = JobInputs.BuiltIn "average"; Base = None; Models = []; Out = None; Settings = []; Device = "auto"
          DType = None; ShardSize = None; Seed = None; AllowNonFinite = false; MissingFromBase = false; Force = false; Quiet = false
          CommandLine = ""; Tokenizer = None }

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
      CommitSeconds: float }

/// `--dtype` text to a dtype.
let parseDType (text: string) =
    match text.Trim().ToLowerInvariant() with
    | "f32" | "float32" | "fp32" -> DType.F32
    | "f16" | "float16" | "fp16" | "half" -> DType.F16
    | "bf16" | "bfloat16" -> DType.BF16
    | _ -> raise (UsageError $"--dtype: unknown dtype '{text}' (expected f32, f16 or bf16)")

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
    let b = Option.map2 (fun (c: Checkpoint) l -> NamedSource(l, c)) opened.Base baseLabel
    let es = List.map2 (fun (c: Checkpoint) l -> NamedSource(l, c)) opened.Models expertLabels
    MergeInputs(Option.toObj b, es |> Array.ofList)

let private prepareReserved (req: Request) (resolved: JobInputs.ResolvedRecipe) dtype shard deviceChoice (output: OutputFolder option) : Prepared =
    let device = DeviceChoice.Resolve deviceChoice
    let opened = JobInputs.openAll { Base = req.Base; Models = req.Models; Out = req.Out; Force = req.Force }
    try
        let tokenizer = OutputTokenizer.prepare req.Tokenizer (labels opened req)
        let plan = Compiler.Compile(resolved.Recipe, tokenizer.Inputs, CompileOptions(OutputDType = Option.toNullable dtype, TakeMissingFromBase = req.MissingFromBase))
        let options = MergeOptions(Device = device, Seed = defaultArg resolved.Seed 0L, AllowNonFinite = req.AllowNonFinite)
        let writerOptions =
            CheckpointWriterOptions(
                MaxShardBytes = defaultArg shard (CheckpointWriterOptions().MaxShardBytes),
                CopyFilesFrom = Option.toObj tokenizer.CopyFrom,
                ExtraFiles = readOnlyDict (Map.toList tokenizer.Files))
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
    // Locked before anything heavy (torch, headers, compiling), so a second run to the same --out stops at once.
    let output = req.Out |> Option.map (fun out -> JobInputs.reserveOut out req.Force (JobInputs.outputInputs inputs))
    try
        prepareReserved req resolved dtype shard deviceChoice output
    with _ ->
        output |> Option.iter (fun o -> o.Dispose())
        reraise ()

let private provenance (p: Prepared) : ModelCard.MergeProvenance =
    { Recipe = p.Plan.Recipe.Name
      RecipeSource = p.Resolved.Origin
      Parameters = [ for kv in p.Plan.Recipe.Parameters -> kv.Key, kv.Value ] @ (match p.Resolved.Seed with Some s when not (p.Plan.Recipe.Parameters.ContainsKey "seed") -> [ "seed", string s ] | _ -> [])
      Base = p.Request.Base |> Option.map Path.GetFullPath
      Models = p.Request.Models |> List.map Path.GetFullPath
      Expression = p.Plan.Recipe.Describe()
      CommandLine = p.Request.CommandLine
      DType = p.Request.DType }

/// Runs a prepared merge into its --out folder.
let execute (p: Prepared) (showProgress: bool) : Summary =
    let out =
        match p.Request.Out with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    let prov = provenance p
    let clock = Stopwatch.StartNew()
    let output =
        match p.Output with
        | Some o -> o
        | None -> raise (UsageError "--out: give the folder to write the merged model to")
    let writerOptions =
        CheckpointWriterOptions(
            Output = output, MaxShardBytes = p.WriterOptions.MaxShardBytes, Metadata = readOnlyDict (ModelCard.metadata prov),
            CopyFilesFrom = p.WriterOptions.CopyFilesFrom,
            ExtraFiles = readOnlyDict ([ for kv in p.WriterOptions.ExtraFiles -> kv.Key, kv.Value ] @ [ "README.md", ModelCard.render prov ]))
    let written =
        Progress.merge showProgress (fun report ->
            let options =
                MergeOptions(Device = p.Options.Device, Seed = p.Options.Seed, AllowNonFinite = p.Options.AllowNonFinite, Progress = report)
            Merger.Write(p.Plan, out, options, writerOptions))
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
      CommitSeconds = written.CommitTime.TotalSeconds }

/// Prepares and executes.
let run (req: Request) : Summary =
    use p = prepare req
    execute p (not req.Quiet)
