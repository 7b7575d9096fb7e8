/// The README.md written next to a merged model: enough to know what it is and to reproduce it.
module MergeDsl.Cli.Jobs.ModelCard

open System
open System.Text

/// What a merge was made of.
type MergeProvenance =
    { Recipe: string
      RecipeSource: string
      Parameters: (string * string) list
      Base: string option
      Models: string list
      Expression: string
      CommandLine: string
      DType: string option }

/// Metadata entries the CLI adds to every output shard, next to the core's (`Merger.Metadata`: method,
/// canonical expression in `mergedsl.recipe`, parameters, labels, seed), which they never overwrite.
let metadata (p: MergeProvenance) : (string * string) list =
    [ "mergedsl.version", MergeDsl.Version.Current
      "mergedsl.recipe_source", p.RecipeSource
      "mergedsl.base_path", defaultArg p.Base ""
      "mergedsl.model_paths", String.Join(";", p.Models) ]

/// The model card's Markdown text.
let render (p: MergeProvenance) : string =
    let sb = StringBuilder()
    let line (s: string) = sb.Append(s).Append('\n') |> ignore
    line "---"
    line "tags:"
    line "- merge"
    line "- mergedsl"
    line $"- {p.Recipe}"
    line "---"
    line ""
    line $"# Merged model ({p.Recipe})"
    line ""
    line $"Made with mergedsl {MergeDsl.Version.Current} using the `{p.Recipe}` recipe ({p.RecipeSource})."
    line ""
    line "## Inputs"
    line ""
    match p.Base with
    | Some b -> line $"- base: `{b}`"
    | None -> line "- base: none"
    p.Models |> List.iteri (fun i m -> line $"- model {i + 1}: `{m}`")
    line ""
    line "## Parameters"
    line ""
    if List.isEmpty p.Parameters then
        line "(defaults)"
    else
        line "| name | value |"
        line "|---|---|"
        for k, v in p.Parameters do
            line $"| {k} | {v} |"
    match p.DType with
    | Some d -> line $"\nOutput dtype: {d}"
    | None -> ()
    line ""
    line "## Recipe"
    line ""
    line "```"
    line p.Expression
    line "```"
    line ""
    line "## Reproduce"
    line ""
    line "```"
    line p.CommandLine
    line "```"
    sb.ToString()
