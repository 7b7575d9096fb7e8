/// What a recipe script does when it runs on its own under `dotnet fsi` (see recipes/load.fsx):
/// with no model arguments it prints its plan on the demo zoo; with `--base/--model/--out` it
/// merges them like `mergedsl run`. Inside the CLI (MERGEDSL_HOSTED=1) it does nothing.
module MergeDsl.Cli.ScriptHost

open System

let mutable private scriptArgs: string list = []

/// True when the CLI is evaluating the script.
let hosted () = Environment.GetEnvironmentVariable RecipeScript.HostedSymbol = "1"

/// Called by recipes/load.fsx with `fsi.CommandLineArgs` (script path first): records the script's
/// arguments and makes their `--set name=value` pairs visible to ScriptParams.
let init (commandLineArgs: string[]) =
    if not (hosted ()) then
        scriptArgs <- commandLineArgs |> Array.toList |> List.skip (min 1 commandLineArgs.Length)
        let rec sets acc args =
            match args with
            | "--set" :: kv :: rest -> sets (ScriptParams.parseSetting kv :: acc) rest
            | _ :: rest -> sets acc rest
            | [] -> List.rev acc
        ScriptParams.reset (sets [] scriptArgs)

/// The last line of a recipe script: `ScriptHost.main recipe`.
let main (recipe: MergeDsl.Core.Ir.MergeRecipe) : unit =
    if not (hosted ()) then
        failwithf "standalone scripts are not wired yet (%s)" recipe.Name
