// DARE (Yu et al., ICML 2024) + task arithmetic: drop each task-vector entry with probability 1 - density, rescale the survivors, sum, scale, add to the base.
//
//   dotnet fsi recipes/dare-linear.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/dare-linear.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/dare-linear.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), lambda (0.3), rescale (inverse|l1), seed (--seed)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let lambda = ScriptParams.float "lambda" 0.3
let rescale = if ScriptParams.choice "rescale" [ "inverse"; "l1" ] "inverse" = "l1" then L1 else Inverse

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.bernoulliWith rescale density)
    |> Recipe.sum
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "dare-linear" [ "density", string density; "lambda", string lambda ]

handOver recipe
