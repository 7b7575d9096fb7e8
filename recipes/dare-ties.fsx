// DARE + TIES: random drop with rescale (DARE), then TIES sign election and disjoint merge.
//
//   dotnet fsi recipes/dare-ties.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/dare-ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/dare-ties.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), lambda (1.0), rescale (inverse|l1), merge (mean|sum), seed (--seed)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let lambda = ScriptParams.float "lambda" 1.0
let rescale = if ScriptParams.choice "rescale" [ "inverse"; "l1" ] "inverse" = "l1" then L1 else Inverse
let merge = ScriptParams.choice "merge" [ "mean"; "sum" ] "mean"
let combine = if merge = "sum" then Recipe.sum else Recipe.disjointMean

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.bernoulliWith rescale density)
    |> Recipe.electSign Mass
    |> combine
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "dare-ties" [ "density", string density; "lambda", string lambda; "merge", merge ]

handOver recipe
