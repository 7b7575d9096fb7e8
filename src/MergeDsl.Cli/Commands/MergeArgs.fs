/// The command line of `run` and `plan`: one argument type, so a run command line can be planned as
/// it is (plan checks every option and writes nothing).
module MergeDsl.Cli.Commands.MergeArgs

open System
open Argu
open MergeDsl
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

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
    | Missing_From_Base
    | Force
    | [<AltCommandLine("-q")>] Quiet
    | Tensors of count: int
    | Json
    | Parts of count: int
    | Part of spec: string
    | Stats
    | Resume
    | Max_Memory of size: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Recipe _ -> Usage.recipe
            | Base _ -> "the base (pretrained) model folder; needed by task-vector methods."
            | Model _ -> "a fine-tuned model folder; repeat for each model."
            | Out _ -> "folder to write the merged model to (must not exist unless --force)."
            | Set _ -> Usage.mergeParameters
            | Device _ -> "auto (default), cpu or cuda."
            | Dtype _ -> "output dtype of merged tensors: f32, f16 or bf16 (default: as the inputs)."
            | Shard_Size _ -> "largest output shard, e.g. 5GB (default), 500MB."
            | Seed _ -> "seed of random masks (DARE, DELLA); default 0."
            | Allow_Nonfinite -> "keep NaN/Inf (in the inputs or produced by the merge) instead of failing."
            | Missing_From_Base -> "a tensor of the base that some --model lacks is copied from the base (default: an error naming it)."
            | Force -> "replace --out if it exists."
            | Quiet -> "no progress bar or summary."
            | Tensors _ -> "plan only: also list the op graph of the first N tensors."
            | Json -> "print a machine-readable summary (run) or the plan (plan) as JSON on stdout."
            | Parts _ -> "plan only: partition the output into N parts (whole shards, balanced by bytes read + computed) for --part."
            | Part _ -> "run only part I of N (0-based) into OUT.parts/ (then `mergedsl finalize OUT`); auto/N takes I from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX."
            | Stats -> "run only the statistics step of a partitioned merge (global top-k): writes OUT.parts/stats.json, which every part reads."
            | Resume -> "continue a killed run of the same merge from its finished and verified shards."
            | Max_Memory _ -> "cap the executor's memory (prefetch, compute, write queue), e.g. 4GB; checked against the largest tensor."

/// The command line without the options that choose how a merge is run or reported but not its result (--part,
/// --stats, --resume, --max-memory, --json, --quiet): the model card records it, so the parts of a merge, a resumed
/// run and a run on one machine write the same card.
let private resultNeutral (args: string[]) : string[] =
    let rec go acc = function
        | ("--part" | "--max-memory") :: _ :: rest -> go acc rest
        | ("--stats" | "--resume" | "--json" | "--quiet" | "-q") :: rest -> go acc rest
        | a :: rest -> go (a :: acc) rest
        | [] -> List.rev acc
    go [] (List.ofArray args) |> Array.ofList

/// The merge request a command line describes; `out` is the output folder (None: plan only). A mergekit YAML
/// config names its own models and parameters (and runs no code).
let request (args: ParseResults<Args>) (out: string option) : MergeJob.Request =
    let recipe = args.GetResult Recipe
    let quote (a: string) = if a.Contains ' ' then $"\"{a}\"" else a
    { MergeJob.Request.Default with
        Recipe = JobInputs.recipeSource recipe
        Base = args.TryGetResult Base
        Models = args.GetResults Model
        Out = out
        Settings = args.GetResults Set |> List.map (fun s -> try ScriptParams.parseSetting s with :? ArgumentException as e -> raise (UsageError e.Message))
        CommandLine = "mergedsl " + String.Join(" ", Environment.GetCommandLineArgs() |> Array.skip 1 |> resultNeutral |> Array.map quote)
        Device = args.GetResult(Device, defaultValue = "auto")
        DType = args.TryGetResult Dtype
        ShardSize = args.TryGetResult Shard_Size
        Seed = args.TryGetResult Seed
        AllowNonFinite = args.Contains Allow_Nonfinite
        MissingFromBase = args.Contains Missing_From_Base
        Force = args.Contains Force
        Quiet = args.Contains Quiet || args.Contains Json
        Share =
            match args.TryGetResult Part, args.Contains Stats with
            | Some _, true -> raise (UsageError "--stats: the statistics step is a run of its own; give --stats or --part, not both")
            | Some spec, false -> MergeJob.Part(MergeJob.parsePart spec)
            | None, true -> MergeJob.StatisticsStep
            | None, false -> MergeJob.Whole
        Resume = args.Contains Resume
        MaxMemory = args.TryGetResult Max_Memory }
    |> fun req -> if Mergekit.isConfig recipe then Mergekit.apply req recipe else req

/// For an .fsx recipe, runs `command` (run or plan) in a child `mergedsl` process and returns its exit code: a
/// script is a program, whose death must not take this process with it. None: this process does the work.
let inChildForScript (command: string) (args: ParseResults<Args>) : int option =
    let recipe = args.GetResult Recipe
    if RecipeScript.shouldIsolate recipe then
        let verbose = Environment.GetCommandLineArgs() |> Array.exists (fun a -> a = "--verbose" || a = "-v")
        let flat = args.Parser.PrintCommandLineArguments(args.GetAllResults()) |> List.ofArray
        Some(RecipeScript.runIsolated recipe ((if verbose then [ "--verbose" ] else []) @ command :: flat))
    else None
