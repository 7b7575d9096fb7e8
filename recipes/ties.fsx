// TIES-merging (Yadav et al., NeurIPS 2023): trim each task vector to its top-k magnitudes, elect a sign per entry, merge the entries that agree, add to the base.
//
//   dotnet fsi recipes/ties.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), lambda (1.0), scope (tensor|global), merge (mean|sum)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let lambda = ScriptParams.float "lambda" 1.0
let scope = ScriptParams.choice "scope" [ "tensor"; "global" ] "tensor"
let merge = ScriptParams.choice "merge" [ "mean"; "sum" ] "mean"

let trim = if scope = "global" then Recipe.topKGlobal density else Recipe.topK density
let combine = if merge = "sum" then Recipe.sum else Recipe.disjointMean

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify trim
    |> Recipe.electSign Mass
    |> combine
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "ties" [ "density", string density; "lambda", string lambda; "scope", scope; "merge", merge ]

handOver recipe
