// Karcher mean (mergekit's karcher): the Riemannian mean of the experts' directions on the unit sphere (fixed-point iteration), scaled by the mean of their norms.
//
//   dotnet fsi recipes/karcher.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/karcher.fsx --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/karcher.fsx --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): max-iter (10), tol (1e-05)
#load "load.fsx"
open MergeDsl

let maxIter = ScriptParams.int "max-iter" 10
let tol = ScriptParams.float "tol" 1e-5

let recipe =
    Recipe.experts
    |> Recipe.karcher maxIter tol
    |> Recipe.ofTensor
    |> Recipe.named "karcher" [ "max-iter", string maxIter; "tol", string tol ]

handOver recipe
