// Model Breadcrumbs sparsification followed by TIES sign election and disjoint merge.
//
//   dotnet fsi recipes/breadcrumbs-ties.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/breadcrumbs-ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/breadcrumbs-ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), gamma (0.01), lambda (1.0), merge (mean|sum)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let gamma = ScriptParams.float "gamma" 0.01
let lambda = ScriptParams.float "lambda" 1.0
let merge = ScriptParams.choice "merge" [ "mean"; "sum" ] "mean"
let combine = if merge = "sum" then Recipe.sum else Recipe.disjointMean

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.breadcrumbs density gamma)
    |> Recipe.electSign Mass
    |> combine
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "breadcrumbs-ties" [ "density", string density; "gamma", string gamma; "lambda", string lambda; "merge", merge ]

handOver recipe
