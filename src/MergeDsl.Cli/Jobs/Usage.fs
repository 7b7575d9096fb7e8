/// Usage text of the commands that name methods, generated from the method registry so that a new
/// registry entry shows up in `--help` without another edit.
module MergeDsl.Cli.Jobs.Usage

open System
open MergeDsl

let private list (methods: MergeMethod list) = String.Join(", ", methods |> List.map (fun m -> m.Name))

let private parameters (methods: MergeMethod list) =
    methods |> List.collect (fun m -> m.Parameters |> List.map (fun p -> p.Name)) |> List.distinct |> fun ps -> String.Join(", ", ps)

/// The `<recipe>` argument of run and plan.
let recipe =
    $"a built-in method ({list MethodRegistry.merges}), an upscale to MoE ({list MethodRegistry.upscalings}; same --set keys as `mergedsl upscale`) or an .fsx recipe script."

/// The `--set` option of run and plan.
let mergeParameters = $"a recipe parameter, name=value ({parameters MethodRegistry.merges}); repeatable; see docs/cli.md for each method's."

/// The `<method>` argument of upscale.
let upscalings = list MethodRegistry.upscalings + "."

/// The `--set` keys of upscale.
let upscalingParameters =
    let ps = MethodRegistry.upscalings |> List.head |> fun m -> m.Parameters
    String.Join(", ", ps |> List.map (fun p ->
        match p.Default with
        | DefaultsTo v -> $"{p.Name} ({v})"
        | Optional meaning -> $"{p.Name} ({meaning})"
        | Required -> $"{p.Name} (required)")) + "."
