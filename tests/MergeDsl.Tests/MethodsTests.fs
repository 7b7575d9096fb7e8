/// The whole-tensor methods mergekit has (nuslerp, multislerp, karcher, sce, nearswap, arcee_fusion),
/// della_linear, mergekit's DELLA (dim-1 ranks, L1 rescale) and L1 rescale of top-k, with numbers
/// worked out by hand; and gradients / name rules on every numeric parameter of the DSL.
module MergeDsl.Tests.MethodsTests

open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Ops
open MergeDsl.Core.Execution
open MergeDsl.Tests.AlgebraSupport

let private f32 (xs: float list) = [| for x in xs -> float32 x |]

let private mat (rows: float list list) =
    tensor [ int64 rows.Length; int64 rows.Head.Length ] [ for r in rows do for x in r -> float32 x ]

let private ok (r: Result<'a, string>) =
    match r with
    | Ok v -> v
    | Error e -> failtest e

let private s2 = sqrt 0.5

/// Tensors named like three Llama layers, one value each, for gradient and name-rule tests.
let private layerNames =
    [ for l in 0..2 do
          yield $"model.layers.{l}.self_attn.q_proj.weight"
          yield $"model.layers.{l}.mlp.up_proj.weight" ]

[<Tests>]
let golden =
    testList "Methods golden" [
        test "nuslerp: flattened, per row (last dim) and row_wise (dim 0), t = w₂/(w₁ + w₂)" {
            // Flattened [1, 0] and [0, 1], weights 1, 1 → t = 0.5, θ = π/2, sin θ = 1: sin(π/4)·(a + b).
            let r = values (CombineOps.NuSlerp(vec [ 1.0; 0.0 ], vec [ 0.0; 1.0 ], 1.0, 1.0, false, true))
            expectClose 1e-7f r (f32 [ s2; s2 ]) "flattened, t = 0.5"
            // weights 3, 1 → t = 0.25: [sin(3π/8), sin(π/8)] = [0.9238795, 0.3826834].
            let r = values (CombineOps.NuSlerp(vec [ 1.0; 0.0 ], vec [ 0.0; 1.0 ], 3.0, 1.0, false, true))
            expectClose 1e-7f r (f32 [ 0.9238795325; 0.3826834324 ]) "t = 0.25"
            Expect.equal (CombineOps.NuSlerpT(1.0, -1.0)) 0.5 "|w₁ + w₂| < 1e-6 → t = 0.5"
            // Rows (flatten false): row 0 as above; row 1 [2, 0] vs [2, 0] is colinear (sin θ = 0) → lerp = [2, 0].
            let a, b = mat [ [ 1.0; 0.0 ]; [ 2.0; 0.0 ] ], mat [ [ 0.0; 1.0 ]; [ 2.0; 0.0 ] ]
            let r = values (CombineOps.NuSlerp(a, b, 1.0, 1.0, false, false))
            expectClose 1e-7f r (f32 [ s2; s2; 2.0; 0.0 ]) "per row"
            // row_wise (mergekit's dim 0): the vectors are the columns. Column 0: [1, 2] vs [0, 2]:
            // cos = 4/(√5·2), θ = 0.4636476, sin(θ/2)/sin θ = 0.5137431 → 0.5137431·[1, 4] = [0.5137431, 2.0549726].
            // Column 1: [0, 0] vs [1, 0]: the zero vector's unit is 0 (norm clamped at 1e-7), cos 0, θ = π/2 →
            // sin(π/4)·[1, 0] = [0.7071068, 0].
            let r = values (CombineOps.NuSlerp(a, b, 1.0, 1.0, true, false))
            expectClose 1e-6f r (f32 [ 0.5137431484; s2; 2.0549725935; 0.0 ]) "row_wise"
        }
        test "multislerp: unit vectors averaged, renormalised, scaled by the weighted mean norm" {
            // [2, 0] and [0, 1], weights 3, 1 → w = [0.75, 0.25]; units [1, 0], [0, 1]; m = [0.75, 0.25]/‖·‖ =
            // [0.9486833, 0.3162278]; the tangent average Σ wᵢ(uᵢ − (uᵢ·m)m) is 0 at m; norm 0.75·2 + 0.25·1 = 1.75
            // → [1.6601958, 0.5533986].
            let r = values (CombineOps.MultiSlerp([| vec [ 2.0; 0.0 ]; vec [ 0.0; 1.0 ] |], [| 3.0; 1.0 |], true, 1e-8))
            expectClose 1e-6f r (f32 [ 1.75 * 0.9486832981; 1.75 * 0.3162277660 ]) "two vectors"
            // Antipodal with equal weights: m = 0 → lerp for two inputs: 0.5·[1, 0] + 0.5·[−1, 0] = 0.
            let r = values (CombineOps.MultiSlerp([| vec [ 1.0; 0.0 ]; vec [ -1.0; 0.0 ] |], [| 1.0; 1.0 |], true, 1e-8))
            Expect.equal r (f32 [ 0.0; 0.0 ]) "antipodal pair"
            Expect.throws (fun () -> CombineOps.MultiSlerp([| vec [ 1.0 ]; vec [ -1.0 ]; vec [ 0.0 ] |], [| 1.0; 1.0; 1.0 |], true, 1e-8) |> ignore) "three balanced: error"
        }
        test "karcher: the symmetric mean of two directions, scaled by the mean norm; zero inputs" {
            // [2, 0], [0, 1]: units [1, 0], [0, 1]; start u = [√½, √½]; each T term 0.5·(π/4)/sin(π/4)·(uᵢ − cos·u)
            // cancels → stop; s = (2 + 1)/2 = 1.5 → 1.5·[√½, √½] = [1.0606602, 1.0606602].
            let r = values (CombineOps.Karcher([| vec [ 2.0; 0.0 ]; vec [ 0.0; 1.0 ] |], 10, 1e-5))
            expectClose 1e-6f r (f32 [ 1.5 * s2; 1.5 * s2 ]) "two directions"
            // A zero input is left out of the direction but counts in the scale: [0, 0] and [0, 4] → u = [0, 1], s = 2.
            let r = values (CombineOps.Karcher([| vec [ 0.0; 0.0 ]; vec [ 0.0; 4.0 ] |], 10, 1e-5))
            Expect.equal r (f32 [ 0.0; 2.0 ]) "zero input"
            Expect.equal (values (CombineOps.Karcher([| vec [ 0.0 ]; vec [ 0.0 ] |], 10, 1e-5))) (f32 [ 0.0 ]) "all zero"
        }
        test "sce: select by variance, mean-square weights, sign erase" {
            // τ1 = [1, −2, 0.5], τ2 = [3, 1, −0.5]. select_topk 1: weights mean τ² = 21/12, 41/12 → w = 21/62, 41/62.
            // Σ = [4, −1, 0] → signs [+, −, +]; τ1 kept everywhere, τ2 only at 0.
            // → [(21·1 + 41·3)/62, −2, 0.5] = [2.3225806, −2, 0.5].
            let taus () = [| vec [ 1.0; -2.0; 0.5 ]; vec [ 3.0; 1.0; -0.5 ] |]
            expectClose 1e-6f (values (CombineOps.Sce(taus (), 1.0))) (f32 [ 144.0 / 62.0; -2.0; 0.5 ]) "select all"
            // select_topk 0.5: variances [1, 2.25, 0.25], all nonzero → k = ⌊1.5⌋ = 1: only element 1 stays.
            // τ1 = [0, −2, 0], τ2 = [0, 1, 0]; w = [4/3, 1/3]/(5/3) = [0.8, 0.2]; Σ = −1 → − keeps τ1: −2.
            // Elements 0 and 2: every entry 0 (sign 0 ≠ +1) → 0 / max(0, 1e-6) = 0.
            Expect.equal (values (CombineOps.Sce(taus (), 0.5))) (f32 [ 0.0; -2.0; 0.0 ]) "select half"
            // Through a recipe with the base added back: base 10.
            let ins =
                inputs (Some(model "base" [ "w", vec [ 10.0; 10.0; 10.0 ] ]))
                    [ model "e1" [ "w", vec [ 11.0; 8.0; 10.5 ] ]; model "e2" [ "w", vec [ 13.0; 11.0; 9.5 ] ] ]
            let r = run (Methods.sce 0.5) ins
            Expect.equal r["w"] (f32 [ 10.0; 8.0; 10.0 ]) "θ₀ + sce(τ)"
        }
        test "nearswap: w = clamp(t/|a − b|, 0, 1), entries within t take the expert" {
            // a = 0, b = [0.05, 0.2, −1, 0], t = 0.1: w = [1 (0.1/0.05 = 2), 0.5, 0.1, 1 (|Δ| clamped at 1e-6)]
            // → [0.05, 0.1, −0.1, 0].
            let r = values (CombineOps.NearSwap(vec [ 0.0; 0.0; 0.0; 0.0 ], vec [ 0.05; 0.2; -1.0; 0.0 ], 0.1))
            expectClose 1e-7f r (f32 [ 0.05; 0.1; -0.1; 0.0 ]) "nearswap"
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 1.0 ] ])) [ model "e1" [ "w", vec [ 1.05; 3.0 ] ] ]
            // Δ = [0.05, 2]: w = [1, 0.05] → [1.05, 1 + 0.05·2] = [1.05, 1.1].
            expectClose 1e-6f (run (Methods.nearswap 0.1) ins).["w"] (f32 [ 1.05; 1.1 ]) "method"
        }
        test "arcee fusion: |Δ|·KL importance, threshold median + 1.5·IQR" {
            // a = 0 (2×4), b = [[0.1, 0.2, 0.3, 2], [0, 0.1, 0, 0.1]]. KL(softmax b ‖ uniform) per row:
            // row 0 0.3866369, row 1 0.0012484. Importances sorted: 0, 0, 1.248e-4, 1.248e-4, 0.0386637,
            // 0.0773274, 0.1159911, 0.7732737; n − 1 = 7: median = s[3] = 1.248e-4, Q1 = s[1] = 0, Q3 = s[5] = 0.0773274
            // → threshold 0.1161159: only the 2 (importance 0.773) is taken from b.
            let a = mat [ [ 0.0; 0.0; 0.0; 0.0 ]; [ 0.0; 0.0; 0.0; 0.0 ] ]
            let b = mat [ [ 0.1; 0.2; 0.3; 2.0 ]; [ 0.0; 0.1; 0.0; 0.1 ] ]
            Expect.equal (values (CombineOps.ArceeFusion(a, b))) (f32 [ 0.0; 0.0; 0.0; 2.0; 0.0; 0.0; 0.0; 0.0 ]) "fusion"
            // A vector whose only change is one entry: importances [0, 0, 0, 0, x] → threshold 0, every entry ≥ 0
            // → the whole expert (mergekit's ≥ keeps the zero-importance entries too).
            Expect.equal (values (CombineOps.ArceeFusion(vec [ 0.0; 0.0; 0.0; 0.0; 0.0 ], vec [ 0.0; 0.0; 0.0; 0.0; 5.0 ]))) (f32 [ 0.0; 0.0; 0.0; 0.0; 5.0 ]) "threshold 0"
        }
        test "rescaleL1: x·‖reference‖₁/‖x‖₁, unchanged below 1e-7" {
            // ‖[1, 2, −3, −1]‖₁ = 7, ‖[0, 2, 0, −1]‖₁ = 3 → × 7/3.
            let r = values (CombineOps.RescaleL1(vec [ 0.0; 2.0; 0.0; -1.0 ], vec [ 1.0; 2.0; -3.0; -1.0 ]))
            expectClose 1e-6f r (f32 [ 0.0; 14.0 / 3.0; 0.0; -7.0 / 3.0 ]) "L1"
            Expect.equal (values (CombineOps.RescaleL1(vec [ 0.0; 0.0 ], vec [ 1.0; 2.0 ]))) (f32 [ 0.0; 0.0 ]) "all dropped"
        }
        test "DELLA ranks along dim 1 (mergekit) or per flattened row (paper) on a 3-D tensor" {
            // x[0, :, 0] = [1, 3, 2], x[0, :, 1] = [6, 5, 4]; density 0.5, ε 0.2: p = 0.3 + 0.4·r/(c − 1).
            // Dim1: each fibre of 3 ranks alone: [1, 3, 2] → [0.3, 0.7, 0.5], [6, 5, 4] → [0.7, 0.5, 0.3].
            // Rows: one row of 6 in memory order [1, 6, 3, 5, 2, 4] → ranks [0, 5, 2, 4, 1, 3] → 0.3 + 0.08·r.
            let x () = tensor [ 1L; 3L; 2L ] [ 1.0f; 6.0f; 3.0f; 5.0f; 2.0f; 4.0f ]
            let dim1 = values (MergeOps.DellaProbabilities(x (), 0.5, 0.2, DellaRank.Dim1))
            expectClose 1e-7f dim1 (f32 [ 0.3; 0.7; 0.7; 0.5; 0.5; 0.3 ]) "dim 1"
            let rows = values (MergeOps.DellaProbabilities(x (), 0.5, 0.2, DellaRank.Rows))
            expectClose 1e-7f rows (f32 [ 0.3; 0.7; 0.46; 0.62; 0.38; 0.54 ]) "rows"
            // 2-D: the two agree.
            let m = mat [ [ 1.0; 3.0; 2.0 ]; [ 6.0; 5.0; 4.0 ] ]
            Expect.equal (values (MergeOps.DellaProbabilities(m, 0.5, 0.2, DellaRank.Dim1))) (values (MergeOps.DellaProbabilities(m, 0.5, 0.2, DellaRank.Rows))) "2-D"
        }
        test "della rules=mergekit: keep where u < p, then one L1 rescale per tensor (not ÷p per survivor)" {
            // τ = [1, −3, 2] (base 0), density 0.5, ε 0.2: p = [0.3, 0.7, 0.5]; noise [0.25, 0.8, 0.4] keeps 0 and 2.
            // paper: [1/0.3, 0, 2/0.5] = [3.3333333, 0, 4]; mergekit: [1, 0, 2]·‖τ‖₁/‖kept‖₁ = [1, 0, 2]·6/3 = [2, 0, 4].
            let noise = NoiseSource(fun _ -> vec [ 0.25; 0.8; 0.4 ])
            let ins = inputs (Some(model "base" [ "w", vec [ 0.0; 0.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 1.0; -3.0; 2.0 ] ] ]
            let paper = ok (MethodRegistry.byName "della" (Map [ "density", "0.5"; "epsilon", "0.2" ]))
            let mk = ok (MethodRegistry.byName "della" (Map [ "density", "0.5"; "epsilon", "0.2"; "rules", "mergekit" ]))
            expectClose 1e-6f (runWith (MergeOptions(Noise = noise)) paper ins).["w"] (f32 [ 1.0 / 0.3; 0.0; 4.0 ]) "paper"
            expectClose 1e-6f (runWith (MergeOptions(Noise = noise)) mk ins).["w"] (f32 [ 2.0; 0.0; 4.0 ]) "mergekit"
            Expect.stringContains (mk.Describe()) "rescaleL1" "L1 node"
            Expect.stringContains (mk.Describe()) "dim1" "dim-1 ranks"
            // della-linear: same pruning, no sign election: λ·Σ.
            let lin = ok (MethodRegistry.byName "della-linear" (Map [ "density", "0.5"; "epsilon", "0.2"; "lambda", "0.5"; "rules", "mergekit" ]))
            expectClose 1e-6f (runWith (MergeOptions(Noise = noise)) lin ins).["w"] (f32 [ 1.0; 0.0; 2.0 ]) "della-linear, λ 0.5"
        }
        test "registry: the new methods build with mergekit's defaults and check their parameters" {
            let dl = MethodRegistry.tryFind "della_linear" |> Option.get
            let args = ok (MethodRegistry.parse dl Map.empty)
            Expect.equal (args.Number "epsilon") 0.15 "ε 0.15"
            Expect.equal (args.Number "lambda") 1.0 "λ 1"
            for name in [ "nuslerp"; "multislerp"; "karcher"; "sce"; "nearswap"; "arcee_fusion" ] do
                Expect.isSome (MethodRegistry.tryFind name) name
            match MethodRegistry.byName "nuslerp" (Map [ "weights", "1,2,3" ]) with
            | Ok _ -> failtest "three nuslerp weights accepted"
            | Error e -> Expect.stringContains e "two weights" "names the problem"
            match MethodRegistry.byName "sce" (Map [ "select-topk", "1.5" ]) with
            | Ok _ -> failtest "select-topk 1.5 accepted"
            | Error e -> Expect.stringContains e "select-topk" "names the parameter"
            match MethodRegistry.byName "nearswap" Map.empty with
            | Ok _ -> failtest "nearswap without t"
            | Error e -> Expect.stringContains e "'t' is required" "t required (as mergekit)"
        }
        test "compile-time arity and parameter checks name the tensor" {
            let ins = inputs (Some(model "base" [ "w", vec [ 0.0 ] ])) [ model "e1" [ "w", vec [ 1.0 ] ]; model "e2" [ "w", vec [ 2.0 ] ] ]
            expectRecipeError [ "w:"; "needs exactly 2 models, got 3" ] (fun () -> run (Methods.nearswap 0.1) ins |> ignore) |> ignore
            let weird = Recipe.experts |> Recipe.taskVectors |> Recipe.sce (Recipe.byLayer [ 0.5; 2.0 ]) |> Recipe.ofTensor
            let insL = inputs (Some(model "base" [ "a.0.w", vec [ 0.0 ]; "a.1.w", vec [ 0.0 ] ])) [ model "e1" [ "a.0.w", vec [ 1.0 ]; "a.1.w", vec [ 1.0 ] ] ]
            expectRecipeError [ "a.1.w:"; "select_topk 2 is outside [0, 1]" ] (fun () -> run weird insL |> ignore) |> ignore
        }
    ]

[<Tests>]
let gradients =
    testList "Methods gradients and name rules" [
        test "slerp t: separate layer curves for self_attn and mlp (mergekit's most common config)" {
            // a = [1, 0], b = [0, 1]: slerp t = [cos(tπ/2), sin(tπ/2)]. L = 3 → layer t-positions 0, 0.5, 1.
            // self_attn: byLayer [0, 1] → t = 0, 0.5, 1; mlp: byLayer [1, 0.5, 0] → t = 1, 0.5, 0 (hand).
            let t = Recipe.byName [ "*self_attn*", Recipe.byLayer [ 0.0; 1.0 ]; "*mlp*", Recipe.byLayer [ 1.0; 0.5; 0.0 ] ] (Recipe.constant 0.5)
            let recipe = Recipe.experts |> Recipe.slerpBy t |> Recipe.ofTensor
            let ins = inputs None [ model "a" [ for n in layerNames -> n, vec [ 1.0; 0.0 ] ]; model "b" [ for n in layerNames -> n, vec [ 0.0; 1.0 ] ] ]
            let r = run recipe ins
            let at tt = f32 [ cos (tt * System.Math.PI / 2.0); sin (tt * System.Math.PI / 2.0) ]
            for l, tAttn, tMlp in [ 0, 0.0, 1.0; 1, 0.5, 0.5; 2, 1.0, 0.0 ] do
                expectClose 1e-6f r[$"model.layers.{l}.self_attn.q_proj.weight"] (at tAttn) $"self_attn layer {l}"
                expectClose 1e-6f r[$"model.layers.{l}.mlp.up_proj.weight"] (at tMlp) $"mlp layer {l}"
            // The reference interpreter agrees.
            let reference = reference MergeOptions.Default recipe ins
            for n in layerNames do
                expectClose 1e-7f reference[n] r[n] n
        }
        test "density gradient: k follows the layer (first, middle, last) in top-k; lambda and weights by name" {
            // τ = [4, −3, 2, 1] in every layer; density byLayer [1, 0.5, 0.25]: layer 0 keeps 4 entries, layer 1
            // k = 2 ([4, −3]), layer 2 k = 1 ([4]). λ: 2 for self_attn, 1 otherwise (byName).
            let tv = Recipe.experts |> Recipe.taskVectors
            let recipe =
                tv
                |> Recipe.sparsifyBy (Recipe.byLayer [ 1.0; 0.5; 0.25 ]) (Recipe.topK 0.5)
                |> Recipe.sum
                |> Recipe.scaleBy (Recipe.byName [ "*self_attn*", Recipe.constant 2.0 ] (Recipe.constant 1.0))
                |> Recipe.addToBase
                |> Recipe.ofTensor
            let ins = inputs (Some(model "base" [ for n in layerNames -> n, vec [ 0.0; 0.0; 0.0; 0.0 ] ])) [ model "e" [ for n in layerNames -> n, vec [ 4.0; -3.0; 2.0; 1.0 ] ] ]
            let r = run recipe ins
            let expect =
                [ "model.layers.0.mlp.up_proj.weight", [ 4.0; -3.0; 2.0; 1.0 ]
                  "model.layers.1.mlp.up_proj.weight", [ 4.0; -3.0; 0.0; 0.0 ]
                  "model.layers.2.mlp.up_proj.weight", [ 4.0; 0.0; 0.0; 0.0 ]
                  "model.layers.1.self_attn.q_proj.weight", [ 8.0; -6.0; 0.0; 0.0 ] ]
            for n, v in expect do
                Expect.equal r[n] (f32 v) n
            Expect.equal (reference MergeOptions.Default recipe ins) r "reference interpreter agrees"
        }
        test "epsilon and gamma vary by name; density by layer in DELLA" {
            // breadcrumbs over x = 1..10 (density 0.5): gamma 0.1 for mlp drops 1 outlier (10) and keeps 9..5;
            // gamma 0 elsewhere keeps 10..6.
            let x = vec [ for i in 1..10 -> float i ]
            let names = [ "model.layers.0.mlp.w"; "model.layers.0.attn.w" ]
            let recipe =
                Recipe.experts
                |> Recipe.sparsifyVarying None None (Some(Recipe.byName [ "*mlp*", Recipe.constant 0.1 ] (Recipe.constant 0.0))) (Recipe.breadcrumbs 0.5 0.3)
                |> Recipe.sum
                |> Recipe.ofTensor
            let r = run recipe (inputs None [ model "e" [ for n in names -> n, x ] ])
            Expect.equal r["model.layers.0.mlp.w"] (f32 [ 0.; 0.; 0.; 0.; 5.; 6.; 7.; 8.; 9.; 0. ]) "gamma 0.1"
            Expect.equal r["model.layers.0.attn.w"] (f32 [ 0.; 0.; 0.; 0.; 0.; 6.; 7.; 8.; 9.; 10. ]) "gamma 0"
            // DELLA with ε by name: p for |x| = [1, 3, 2] at density 0.5 is 0.5 ± ε by rank; noise 0.45 keeps
            // p > 0.45: ε 0.2 → p [0.3, 0.7, 0.5] keeps 3 and 2 (÷p: −3/0.7, 2/0.5); ε 0 → p 0.5 keeps all (÷0.5).
            let noise =
                NoiseSource(fun req ->
                    use v = (0.45).ToScalar()
                    torch.full(req.Shape, v))
            let della =
                Recipe.experts
                |> Recipe.sparsifyVarying None (Some(Recipe.byName [ "*mlp*", Recipe.constant 0.2 ] (Recipe.constant 0.0))) None (Recipe.della 0.5 0.1)
                |> Recipe.sum
                |> Recipe.ofTensor
            let r = runWith (MergeOptions(Noise = noise)) della (inputs None [ model "e" [ for n in names -> n, vec [ 1.0; -3.0; 2.0 ] ] ])
            expectClose 1e-6f r["model.layers.0.mlp.w"] (f32 [ 0.0; -3.0 / 0.7; 4.0 ]) "ε 0.2"
            expectClose 1e-6f r["model.layers.0.attn.w"] (f32 [ 2.0; -6.0; 4.0 ]) "ε 0"
        }
        test "weights vary by layer, normalised per tensor (shares); lerp t by layer" {
            // weights [byLayer [1, 3], constant 1] → layer 0: [1, 1] → shares [0.5, 0.5]; layer 2: [3, 1] → [0.75, 0.25].
            // experts 4 and 0 → 2 and 3.
            let ws = Recipe.shares [ Recipe.byLayer [ 1.0; 3.0 ]; Recipe.constant 1.0 ]
            let recipe = Recipe.experts |> Recipe.weightedBy ws |> Recipe.ofTensor
            let ins = inputs None [ model "a" [ for n in layerNames -> n, vec [ 4.0 ] ]; model "b" [ for n in layerNames -> n, vec [ 0.0 ] ] ]
            let r = run recipe ins
            Expect.equal r["model.layers.0.mlp.up_proj.weight"] (f32 [ 2.0 ]) "layer 0"
            expectClose 1e-6f r["model.layers.1.mlp.up_proj.weight"] (f32 [ 8.0 / 3.0 ]) "layer 1: [2, 1] → 2/3·4"
            Expect.equal r["model.layers.2.mlp.up_proj.weight"] (f32 [ 3.0 ]) "layer 2"
            // lerp t byLayer [0, 1]: 4·(1 − t) → 4, 2, 0.
            let lerp = Recipe.experts |> Recipe.lerpBy (Recipe.byLayer [ 0.0; 1.0 ]) |> Recipe.ofTensor
            let r = run lerp ins
            Expect.equal [ for l in 0..2 -> r[$"model.layers.{l}.mlp.up_proj.weight"] ] [ f32 [ 4.0 ]; f32 [ 2.0 ]; f32 [ 0.0 ] ] "lerp t"
        }
        test "nuslerp weights and nearswap t vary by layer" {
            // nearswap a = 0, b = 1: w = clamp(t/1, 0, 1) = t; t byLayer [0, 1] → 0, 0.5, 1.
            let recipe = Recipe.experts |> Recipe.withBase |> Recipe.nearswap (Recipe.byLayer [ 0.0; 1.0 ]) |> Recipe.ofTensor
            let ins = inputs (Some(model "base" [ for n in layerNames -> n, vec [ 0.0 ] ])) [ model "e" [ for n in layerNames -> n, vec [ 1.0 ] ] ]
            let r = run recipe ins
            Expect.equal [ for l in 0..2 -> r[$"model.layers.{l}.mlp.up_proj.weight"] ] [ f32 [ 0.0 ]; f32 [ 0.5 ]; f32 [ 1.0 ] ] "t by layer"
            // nuslerp of [1, 0], [0, 1] with weights (1, byLayer [0, 1]) → t = 0, 1/3, 1/2:
            // [cos(tπ/2), sin(tπ/2)].
            let nu = Recipe.experts |> Recipe.nuslerpWith (Recipe.constant 1.0, Recipe.byLayer [ 0.0; 1.0 ]) false true |> Recipe.ofTensor
            let ins2 = inputs None [ model "a" [ for n in layerNames -> n, vec [ 1.0; 0.0 ] ]; model "b" [ for n in layerNames -> n, vec [ 0.0; 1.0 ] ] ]
            let r = run nu ins2
            for l, t in [ 0, 0.0; 1, 1.0 / 3.0; 2, 0.5 ] do
                expectClose 1e-6f r[$"model.layers.{l}.mlp.up_proj.weight"] (f32 [ cos (t * System.Math.PI / 2.0); sin (t * System.Math.PI / 2.0) ]) $"layer {l}"
        }
        test "a global top-k refuses a varying density" {
            let recipe = Recipe.experts |> Recipe.sparsifyBy (Recipe.byLayer [ 0.5; 1.0 ]) (Recipe.topKGlobal 0.5) |> Recipe.sum |> Recipe.ofTensor
            let ins = inputs None [ model "e" [ for n in layerNames -> n, vec [ 1.0 ] ] ]
            expectRecipeError [ "cannot vary" ] (fun () -> run recipe ins |> ignore) |> ignore
        }
    ]
