// DELLA-linear (Deep et al., 2024; mergekit's della_linear): MagPrune each task vector (keep probability rising with magnitude rank in [density - epsilon, density + epsilon], survivors rescaled), then task arithmetic: no sign election.
//
//   dotnet fsi recipes/della-linear.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/della-linear.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/della-linear.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (1.0), epsilon (0.15), lambda (1.0), seed (--seed); mergekit's defaults
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 1.0
let epsilon = ScriptParams.float "epsilon" 0.15
let lambda = ScriptParams.float "lambda" 1.0

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.della density epsilon)
    |> Recipe.sum
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "della-linear" [ "density", string density; "epsilon", string epsilon; "lambda", string lambda ]

handOver recipe
