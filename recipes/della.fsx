// DELLA (Deep et al., 2024): MagPrune keeps entries with probability rising with magnitude rank in [density - epsilon, density + epsilon], rescales survivors, then TIES sign election and disjoint merge.
//
//   dotnet fsi recipes/della.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/della.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/della.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), epsilon (0.1), lambda (1.0), merge (mean|sum), seed (--seed)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let epsilon = ScriptParams.float "epsilon" 0.1
let lambda = ScriptParams.float "lambda" 1.0
let merge = ScriptParams.choice "merge" [ "mean"; "sum" ] "mean"
let combine = if merge = "sum" then Recipe.sum else Recipe.disjointMean

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.della density epsilon)
    |> Recipe.electSign Mass
    |> combine
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "della" [ "density", string density; "epsilon", string epsilon; "lambda", string lambda; "merge", merge ]

handOver recipe
