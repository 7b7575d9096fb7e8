// Average: the element-wise mean of the models (Wortsman et al., model soups).
//
//   dotnet fsi recipes/average.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/average.fsx [--base BASE] --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/average.fsx [--base BASE] --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): none
#load "load.fsx"
open MergeDsl

let recipe =
    Recipe.experts
    |> Recipe.mean
    |> Recipe.ofTensor
    |> Recipe.named "average" []

handOver recipe
