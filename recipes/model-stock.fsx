// Model Stock (Jang et al., ECCV 2024): interpolate between the experts' average and the base with a ratio set per tensor by the angle between the task vectors.
//
//   dotnet fsi recipes/model-stock.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/model-stock.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/model-stock.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): none
#load "load.fsx"
open MergeDsl

let recipe =
    Recipe.experts
    |> Recipe.modelStock
    |> Recipe.ofTensor
    |> Recipe.named "model-stock" []

handOver recipe
