/// The README.md written next to a merged model: enough to know what it is and to reproduce it.
module MergeDsl.Cli.ModelCard

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

/// Metadata entries stored in every output shard (safetensors `__metadata__`).
let metadata (p: MergeProvenance) : (string * string) list =
    [ "mergedsl.version", MergeDsl.Version.Current
      "mergedsl.recipe", p.Recipe
      "mergedsl.recipe_source", p.RecipeSource
      "mergedsl.parameters", (p.Parameters |> List.map (fun (k, v) -> $"{k}={v}") |> String.concat ";")
      "mergedsl.base", defaultArg p.Base ""
      "mergedsl.models", String.Join(";", p.Models)
      "mergedsl.expression", p.Expression ]

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
