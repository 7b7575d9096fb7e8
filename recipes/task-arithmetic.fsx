// Task arithmetic (Ilharco et al., ICLR 2023): theta = theta0 + lambda * sum_i (theta_i - theta0).
//
//   dotnet fsi recipes/task-arithmetic.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/task-arithmetic.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/task-arithmetic.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): lambda (default 0.3)
#load "load.fsx"
open MergeDsl

let lambda = ScriptParams.float "lambda" 0.3

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sum
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "task-arithmetic" [ ("lambda", string lambda) ]

handOver recipe
