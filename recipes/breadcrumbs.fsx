// Model Breadcrumbs (Davari & Belilovsky, 2024): drop the largest gamma fraction (outliers) and the smallest entries of each task vector, keeping density; then task arithmetic.
//
//   dotnet fsi recipes/breadcrumbs.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/breadcrumbs.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/breadcrumbs.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): density (0.2), gamma (0.01), lambda (0.3)
#load "load.fsx"
open MergeDsl

let density = ScriptParams.density 0.2
let gamma = ScriptParams.float "gamma" 0.01
let lambda = ScriptParams.float "lambda" 0.3

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sparsify (Recipe.breadcrumbs density gamma)
    |> Recipe.sum
    |> Recipe.scale lambda
    |> Recipe.addTo Recipe.baseModel
    |> Recipe.ofTensor
    |> Recipe.named "breadcrumbs" [ "density", string density; "gamma", string gamma; "lambda", string lambda ]

handOver recipe
