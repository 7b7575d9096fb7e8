/// Hand-computed inputs and exact expected outputs (the arithmetic is written next to each case).
module MergeDsl.Tests.GoldenTests

open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Ops
open MergeDsl.Core.Execution
open MergeDsl.Tests.AlgebraSupport


let private f32 (xs: float list) = [| for x in xs -> float32 x |]

// TIES fixture: base = 1 everywhere, experts = base + τ.
//   τ1 = [ 3, -1,  2,  0.5, -4, 1  ]
//   τ2 = [-2,  2,  1, -3,   -1, 0.5]
//   τ3 = [ 1, -3, -2,  0.25,-2, 0  ]
let private ones6 = [ 1.0; 1.0; 1.0; 1.0; 1.0; 1.0 ]
let private tau1 = [ 3.0; -1.0; 2.0; 0.5; -4.0; 1.0 ]
let private tau2 = [ -2.0; 2.0; 1.0; -3.0; -1.0; 0.5 ]
let private tau3 = [ 1.0; -3.0; -2.0; 0.25; -2.0; 0.0 ]
let private plus (a: float list) (b: float list) = List.map2 (+) a b

let private tiesInputs extraB =
    let b = if extraB then [ "b", vec [ 1.0; 1.0 ] ] else []
    let e1b = if extraB then [ "b", vec [ 6.0; 1.1 ] ] else []
    let e2b = if extraB then [ "b", vec [ 1.5; 0.9 ] ] else []
    let e3b = if extraB then [ "b", vec [ 3.5; 0.0 ] ] else []
    inputs
        (Some(model "base" ([ "a", vec ones6 ] @ b)))
        [ model "e1" ([ "a", vec (plus ones6 tau1) ] @ e1b)
          model "e2" ([ "a", vec (plus ones6 tau2) ] @ e2b)
          model "e3" ([ "a", vec (plus ones6 tau3) ] @ e3b) ]

[<Tests>]
let tests =
    testList "Golden" [
        test "task arithmetic: θ0 + λ(τ1 + τ2)" {
            // base [1,2,3,4]; τ1 = [1,0,0,1], τ2 = [0,2,-2,0]; λ = 0.5 → base + 0.5·[1,2,-2,1] = [1.5,3,2,4.5]
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 2.0; 3.0; 4.0 ] ])) [ model "e1" [ "w", vec [ 2.0; 2.0; 3.0; 5.0 ] ]; model "e2" [ "w", vec [ 1.0; 4.0; 1.0; 4.0 ] ] ]
            let r = run (Methods.taskArithmetic 0.5) ins
            Expect.equal r["w"] (f32 [ 1.5; 3.0; 2.0; 4.5 ]) "TA"
        }

        test "top-k keeps round(density·n) entries, ties go to the lower index" {
            // |x| = [2,1,2,2], k = 2: the three 2s tie, indexes 0 and 2 win.
            Expect.equal (values (MergeOps.TopK(vec [ 2.0; 1.0; -2.0; 2.0 ], 0.5))) (f32 [ 2.0; 0.0; -2.0; 0.0 ]) "ties"
            // n = 5, density 0.3 → 1.5 rounds away from zero to k = 2.
            Expect.equal (values (MergeOps.TopK(vec [ 1.0; 5.0; -3.0; 2.0; 0.5 ], 0.3))) (f32 [ 0.0; 5.0; -3.0; 0.0; 0.0 ]) "k = 2"
            // density 1 keeps everything, zeros included.
            Expect.equal (values (MergeOps.TopK(vec [ 0.0; -1.0; 2.0 ], 1.0))) (f32 [ 0.0; -1.0; 2.0 ]) "density 1"
            Expect.equal (MergeOps.KeepCount(0.25, 4L)) 1L "k = 1"
        }

        test "TIES per tensor, disjoint mean (paper)" {
            // density 0.5 → k = 3 per expert:
            //   trim τ1 → [3,0,2,0,-4,0]; τ2 → [-2,2,0,-3,0,0] (|2| at 0 and 1 both fit); τ3 → [0,-3,-2,0,-2,0]
            //   mass sums: [1,-1,0,-3,-6,0] → signs [+,-,0,-,-,0]
            //   kept: [3 | -3 | none | -3 | -4,-2 | none] → disjoint mean [3,-3,0,-3,-3,0]; + base 1
            let r = run (Methods.ties 0.5 1.0 PerTensor MergeMean) (tiesInputs false)
            Expect.equal r["a"] (f32 [ 4.0; -2.0; 1.0; -2.0; -2.0; 1.0 ]) "TIES mean"
        }

        test "TIES per tensor, disjoint sum (FusionBench)" {
            // as above but index 4 sums -4 + -2 = -6
            let r = run (Methods.ties 0.5 1.0 PerTensor MergeSum) (tiesInputs false)
            Expect.equal r["a"] (f32 [ 4.0; -2.0; 1.0; -2.0; -5.0; 1.0 ]) "TIES sum"
        }

        test "TIES global scope: k over the whole model, exact threshold with ties in plan order" {
            // tensors a (6) and b (2): τ1_b = [5, 0.1], τ2_b = [0.5, -0.1], τ3_b = [2.5, -1]; density 0.5 → k = 4 of 8 per expert
            //   e1 magnitudes 5(b0) 4(a4) 3(a0) 2(a2) | … → a [3,0,2,0,-4,0], b [5,0]
            //   e2: 3(a3) 2(a0) 2(a1) then 1(a2) and 1(a4) tie for the last place: a2 (earlier) wins → a [-2,2,1,-3,0,0], b [0,0]
            //   e3: 3(a1) 2.5(b0) 2(a2) 2(a4) → a [0,-3,-2,0,-2,0], b [2.5,0]
            //   a: sums [1,-1,1,-3,-6,0] → kept [3 | -3 | 2,1 | -3 | -4,-2 | –] → mean [3,-3,1.5,-3,-3,0]
            //   b: sums [7.5, 0] → mean [3.75, 0]
            let r = run (Methods.ties 0.5 1.0 Global MergeMean) (tiesInputs true)
            Expect.equal r["a"] (f32 [ 4.0; -2.0; 2.5; -2.0; -2.0; 1.0 ]) "a"
            Expect.equal r["b"] (f32 [ 4.75; 1.0 ]) "b"
        }

        test "TIES global scope, disjoint sum" {
            // as above; sums: a4 = -6, a2 = 3, b0 = 7.5
            let r = run (Methods.ties 0.5 1.0 Global MergeSum) (tiesInputs true)
            Expect.equal r["a"] (f32 [ 4.0; -2.0; 4.0; -2.0; -5.0; 1.0 ]) "a"
            Expect.equal r["b"] (f32 [ 8.5; 1.0 ]) "b"
        }

        test "DARE with a fixed mask: keep where noise < density, survivors ÷ density" {
            // τ = [2,-4,6,8], noise = [0.1,0.7,0.3,0.9], density 0.5 → keep 0 and 2 → [4,0,12,0]; + base 1
            let noise = NoiseSource(fun req -> vec [ 0.1; 0.7; 0.3; 0.9 ])
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 1.0; 1.0; 1.0 ] ])) [ model "e1" [ "w", vec [ 3.0; -3.0; 7.0; 9.0 ] ] ]
            let opts = MergeOptions(Noise = noise)
            let r = runWith opts (Methods.dareLinear 0.5 1.0 Inverse) ins
            Expect.equal r["w"] (f32 [ 5.0; 1.0; 13.0; 1.0 ]) "inverse rescale"
            // L1 (mergekit): ‖τ‖₁ = 20, kept ‖[2,0,6,0]‖₁ = 8 → × 2.5 → [5,0,15,0]; + base
            let r = runWith opts (Methods.dareLinear 0.5 1.0 L1) ins
            Expect.equal r["w"] (f32 [ 6.0; 1.0; 16.0; 1.0 ]) "L1 rescale"
        }

        test "DARE noise is asked per parameter and stack position, with the seed" {
            let asked = System.Collections.Concurrent.ConcurrentBag<string * int * int64>()
            let noise = NoiseSource(fun req -> asked.Add((req.Parameter, req.Position, req.Seed)); torch.zeros(req.Shape))
            let ins = inputs (Some(model "base" [ "w", vec [ 0.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 1.0; 2.0 ] ]; model "e2" [ "w", vec [ 3.0; 4.0 ] ] ]
            let r = runWith (MergeOptions(Noise = noise, Seed = 7L)) (Methods.dareLinear 0.5 1.0 Inverse) ins
            // noise 0 < 0.5 keeps all: 2·(τ1 + τ2)
            Expect.equal r["w"] (f32 [ 8.0; 12.0 ]) "all kept, doubled"
            Expect.equal (asked |> Seq.sort |> List.ofSeq) [ ("w", 0, 7L); ("w", 1, 7L) ] "one request per expert"
        }

        test "breadcrumbs: drop the top gamma·n outliers and the small tail, keep round(density·n)" {
            // |x| descending: 10(i1) 6(i7) 5(i9) 4(i5) 3(i2) 2(i4) 1(i0) .5 .2 .1; gamma 0.1 → drop 1; keep the next 5
            let x = vec [ 1.0; -10.0; 3.0; 0.5; -2.0; 4.0; 0.1; 6.0; -0.2; 5.0 ]
            Expect.equal (values (MergeOps.Breadcrumbs(x, 0.5, 0.1))) (f32 [ 0.0; 0.0; 3.0; 0.0; -2.0; 4.0; 0.0; 6.0; 0.0; 5.0 ]) "breadcrumbs"
            let ins = inputs (Some(model "base" [ "w", vec (List.replicate 10 0.0) ])) [ model "e1" [ "w", x ] ]
            let r = run (Methods.breadcrumbs 0.5 0.1 1.0) ins
            Expect.equal r["w"] (f32 [ 0.0; 0.0; 3.0; 0.0; -2.0; 4.0; 0.0; 6.0; 0.0; 5.0 ]) "method"
        }

        test "DELLA with fixed noise: rank-linear keep probabilities, survivors ÷ p" {
            // |x| = [1,3,2] → ranks (small→large) [0,2,1] → p = 0.3 + 0.4·[0,1,0.5] = [0.3,0.7,0.5]
            // noise [0.25,0.8,0.4] keeps 0 and 2 → [1/0.3, 0, 2/0.5]
            let p = values (MergeOps.DellaProbabilities(vec [ 1.0; -3.0; 2.0 ], 0.5, 0.2))
            expectClose 1e-6f p (f32 [ 0.3; 0.7; 0.5 ]) "probabilities"
            let r = values (MergeOps.Della(vec [ 1.0; -3.0; 2.0 ], vec [ 0.25; 0.8; 0.4 ], 0.5, 0.2, true))
            Expect.equal r (f32 [ float32 (1.0 / 0.3) |> float; 0.0; 4.0 ]) "della"
        }

        test "model stock: t = k·cos/((k−1)cos + 1) between the experts' mean and the base" {
            // base [1,1]; τ1 = [1,0], τ2 = [1,1] → cos = 1/√2; k = 2 → t = 2(√2 − 1) = 0.828427…
            // mean = [2, 1.5] → t·mean + (1 − t)·base = [1 + t, 1 + t/2]
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 1.0 ] ])) [ model "e1" [ "w", vec [ 2.0; 1.0 ] ]; model "e2" [ "w", vec [ 2.0; 2.0 ] ] ]
            let t = 2.0 * (sqrt 2.0 - 1.0)
            let r = run Methods.modelStock ins
            expectClose 1e-6f r["w"] (f32 [ 1.0 + t; 1.0 + t / 2.0 ]) "model stock"
        }

        test "slerp: orthogonal unit vectors at t = 0.5, and the lerp fallback when parallel" {
            // θ = π/2: sin(π/4)/sin(π/2) = √½ for both
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 0.0; 1.0 ] ] ]
            let r = run (Methods.slerp 0.5) ins
            expectClose 1e-6f r["w"] (f32 [ sqrt 0.5; sqrt 0.5 ]) "slerp"
            // parallel: lerp 0.25 between [1,0] and [2,0] = [1.25, 0]
            let ins = inputs (Some(model "base" [ "w", vec [ 1.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 2.0; 0.0 ] ] ]
            Expect.equal (run (Methods.slerp 0.25) ins).["w"] (f32 [ 1.25; 0.0 ]) "parallel → lerp"
        }

        test "average and weighted average" {
            let ins = inputs None [ model "e1" [ "w", vec [ 1.0; 2.0 ] ]; model "e2" [ "w", vec [ 3.0; 6.0 ] ] ]
            Expect.equal (run Methods.average ins).["w"] (f32 [ 2.0; 4.0 ]) "average"
            // weights 1, 3 → (1·e1 + 3·e2)/4
            Expect.equal (run (Methods.weightedAverage [ 1.0; 3.0 ]) ins).["w"] (f32 [ 2.5; 5.0 ]) "weighted"
        }

        test "scale by layer gradient and by name" {
            // 3 layers: t = 0, 0.5, 1 over anchors [0, 1] → factors 0, 0.5, 1; "emb" (no layer) takes the first anchor
            let names = [ "layers.0.w"; "layers.1.w"; "layers.2.w"; "emb" ]
            let ins = inputs (Some(model "base" [ for n in names -> n, vec [ 2.0 ] ])) []
            let r = run (Recipe.ofTensor (Recipe.baseModel |> Recipe.scaleBy (Recipe.byLayer [ 0.0; 1.0 ]))) ins
            Expect.equal [ for n in names -> r[n].[0] ] [ 0.0f; 1.0f; 2.0f; 0.0f ] "gradient"
            let byName = Recipe.byName [ "re:.*\\.1\\..*", Recipe.constant 3.0 ] (Recipe.constant 0.5)
            let r = run (Recipe.ofTensor (Recipe.baseModel |> Recipe.scaleBy byName)) ins
            Expect.equal [ for n in names -> r[n].[0] ] [ 1.0f; 6.0f; 1.0f; 1.0f ] "name rules"
        }
    ]
