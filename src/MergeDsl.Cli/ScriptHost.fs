/// What a recipe script does when it runs on its own under `dotnet fsi` (see recipes/load.fsx):
/// with no model arguments it prints its plan on the demo zoo; with `--base/--model/--out` it
/// merges them exactly like `mergedsl run` (same options); with `--plan` and models it prints
/// their plan. Inside the CLI (MERGEDSL_HOSTED=1) it does nothing: the CLI only wants the value.
module MergeDsl.Cli.ScriptHost

open System
open System.IO
open Argu
open MergeDsl.Core.Ir
open MergeDsl.Bench.Demo
open MergeDsl
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure
open MergeDsl.Cli.Commands

let mutable private scriptPath = "script"
let mutable private scriptArgs: string list = []

/// True when the CLI is evaluating the script.
let hosted () = Environment.GetEnvironmentVariable RecipeScript.HostedSymbol = "1"

/// Called by recipes/load.fsx with `fsi.CommandLineArgs` (script path first): records the script's
/// arguments and makes their `--set name=value` pairs visible to ScriptParams.
let init (commandLineArgs: string[]) =
    if not (hosted ()) then
        scriptPath <- (if commandLineArgs.Length > 0 then commandLineArgs[0] else "script")
        scriptArgs <- commandLineArgs |> Array.toList |> List.skip (min 1 commandLineArgs.Length)
        let rec sets acc args =
            match args with
            | "--set" :: kv :: rest -> sets (ScriptParams.parseSetting kv :: acc) rest
            | _ :: rest -> sets acc rest
            | [] -> List.rev acc
        ScriptParams.reset (sets [] scriptArgs)

/// The demo zoo (built once under the temp folder): base and experts.
let private demoZoo () =
    let folder = Path.Combine(Path.GetTempPath(), "mergedsl-demo-zoo")
    let models = DemoZoo.Build(folder, DemoZooConfig())
    let baseModel = models |> Seq.find (fun m -> m.Name = "base")
    let experts = models |> Seq.filter (fun m -> m.Name <> "base") |> Seq.map (fun m -> m.Folder) |> List.ofSeq
    baseModel.Folder, experts

let private standalone (recipe: MergeRecipe) =
    // Argu wants the recipe positional of `run`; the script itself is the recipe.
    let parser = ArgumentParser.Create<MergeArgs.Args>(programName = $"dotnet fsi {scriptPath}")
    let planOnly = List.contains "--plan" scriptArgs
    let rest = scriptArgs |> List.filter (fun a -> a <> "--plan")
    let args = parser.ParseCommandLine(Array.ofList (scriptPath :: rest), raiseOnUsage = true)
    let given = JobInputs.Given(recipe, scriptPath)
    let models = args.GetResults MergeArgs.Model
    if models.IsEmpty || planOnly then
        let baseDir, experts, where =
            if models.IsEmpty then
                let b, es = demoZoo ()
                let es = if recipe.Name = "slerp" then List.truncate 2 es else es
                Some b, es, "the demo zoo"
            else args.TryGetResult MergeArgs.Base, models, "the given models"
        let baseDir = if JobInputs.needsBase recipe then baseDir else (if models.IsEmpty then None else baseDir)
        if not (args.Contains MergeArgs.Json) then printfn "plan of %s on %s:" scriptPath where
        Plan.show { MergeArgs.request args None with Recipe = given; Base = baseDir; Models = experts; Settings = [] } (args.Contains MergeArgs.Json) 0
        ExitCode.Ok
    else
        // --set pairs already reached ScriptParams in init; the recipe value carries them.
        let req = { MergeArgs.request args (args.TryGetResult MergeArgs.Out) with Recipe = given; Settings = [] }
        if req.Out.IsNone then raise (UsageError "--out: give the folder to write the merged model to")
        let summary = MergeJob.run req
        Run.report (args.Contains MergeArgs.Json) (args.Contains MergeArgs.Quiet) summary
        ExitCode.Ok

/// The last line of a recipe script: `ScriptHost.main recipe`. Standalone, it plans or merges and
/// exits with the CLI's exit codes on failure.
let main (recipe: MergeRecipe) : unit =
    if not (hosted ()) then
        let code =
            try
                guard (List.contains "--verbose" scriptArgs) (fun () -> standalone recipe)
            with :? ArguParseException as e ->
                eprintfn "%s" e.Message
                ExitCode.Usage
        if code <> 0 then exit code
