// Passthrough: every tensor copied unchanged from the base model (mergekit's `passthrough`; with
// `Recipe.select` rules it becomes the "copy these layers, merge the rest" building block).
//
//   dotnet fsi recipes/passthrough.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/passthrough.fsx --base BASE --model A --out OUT
//   mergedsl run recipes/passthrough.fsx --base BASE --out OUT
//
// Parameters (--set): none
#load "load.fsx"
open MergeDsl

let recipe =
    Recipe.baseModel
    |> Recipe.passthrough
    |> Recipe.ofTensor
    |> Recipe.named "passthrough" []

handOver recipe
