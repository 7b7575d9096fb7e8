/// The algebra's laws (design.md "Laws") as FsCheck properties, each its own named property.
module MergeDsl.Tests.LawsTests

open System
open Expecto
open FsCheck
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Ops
open MergeDsl.Core.Execution
open MergeDsl.Tests.AlgebraSupport

let private config = { FsCheckConfig.defaultConfig with maxTest = 25 }

/// A small random world: a base and n experts over two tensors (one 2-D), seeded.
let private world (seed: int) (nExperts: int) =
    let rng = Random seed
    let shapes = [ "layers.0.w", [ 2L; 3L ]; "layers.1.b", [ 4L ] ]
    let mk label =
        model label [ for (n, s) in shapes -> n, tensor s [ for _ in 1 .. int (List.reduce (*) s) -> float32 (rng.Next(-40, 41)) / 8.0f ] ]
    let b = mk "base"
    let experts = [ for i in 1..nExperts -> mk $"e{i}" ]
    b, experts

let private copies (b: MergeDsl.Core.Compilation.NamedSource) n =
    [ for i in 1..n -> MergeDsl.Core.Compilation.NamedSource($"copy{i}", b.Source) ]

let private valuesOf (src: MergeDsl.Core.Compilation.NamedSource) =
    src.Source.Tensors |> Seq.map (fun i -> i.Name, (use t = src.Source.Load i.Name in values t)) |> Map.ofSeq

let private nOf (seed: int) = 1 + abs seed % 3

let private prop name f = testPropertyWithConfig config name f

[<Tests>]
let tests =
    testList "Laws" [
        prop "λ = 0 returns the base" (fun (seed: int) ->
            let b, es = world seed (nOf seed)
            run (Methods.taskArithmetic 0.0) (inputs (Some b) es) = valuesOf b)

        prop "the average of N copies of θ is θ" (fun (seed: int) ->
            let b, _ = world seed 1
            run Methods.average (inputs None (copies b (2 + abs seed % 4))) = valuesOf b)

        prop "TA with one expert and λ = 1 is that expert" (fun (seed: int) ->
            let b, es = world seed 1
            let r = run (Methods.taskArithmetic 1.0) (inputs (Some b) es)
            let e = valuesOf es.Head
            r |> Map.forall (fun k v -> close 1e-6f e[k] v))

        prop "TA with λ = 1/N is the simple average" (fun (seed: int) ->
            let n = 1 + nOf seed
            let b, es = world seed n
            let ta = run (Methods.taskArithmetic (1.0 / float n)) (inputs (Some b) es)
            let avg = run Methods.average (inputs None es)
            ta |> Map.forall (fun k v -> close 1e-5f avg[k] v))

        prop "TIES with one expert and density 1 equals TA" (fun (seed: int) ->
            let b, es = world seed 1
            let lambda = 0.25 + float (abs seed % 4) / 4.0
            let ins = inputs (Some b) es
            run (Methods.ties 1.0 lambda PerTensor MergeMean) ins = run (Methods.taskArithmetic lambda) ins)

        prop "results are invariant to permuting the experts (average, TA, TIES, model stock)" (fun (seed: int) ->
            let b, es = world seed 3
            let perm = [ es[2]; es[0]; es[1] ]
            [ Methods.average; Methods.taskArithmetic 0.4; Methods.ties 0.5 1.0 PerTensor MergeMean; Methods.ties 0.5 1.0 Global MergeSum; Methods.modelStock ]
            |> List.forall (fun m ->
                let x = run m (inputs (Some b) es)
                let y = run m (inputs (Some b) perm)
                x |> Map.forall (fun k v -> close 1e-6f y[k] v)))

        prop "topK is idempotent and keeps exactly k entries" (fun (seed: int) ->
            let rng = Random seed
            let n = 1 + rng.Next 12
            let xs = [ for _ in 1..n -> float (rng.Next(1, 6)) * (if rng.Next 2 = 0 then -1.0 else 1.0) ]
            let density = float (1 + rng.Next 10) / 10.0
            use x = vec xs
            use once = MergeOps.TopK(x, density)
            use twice = MergeOps.TopK(once, density)
            let kept = values once |> Array.filter (fun v -> v <> 0.0f) |> Array.length
            values once = values twice && int64 kept = MergeOps.KeepCount(density, int64 n))

        prop "bernoulli with density 1 is the identity" (fun (seed: int) ->
            let b, es = world seed (nOf seed)
            let opts = MergeOptions(Seed = int64 seed)
            let r = runWith opts (Recipe.ofTensor (Recipe.experts |> Recipe.sparsify (Recipe.bernoulli 1.0) |> Recipe.pick 0)) (inputs (Some b) es)
            r = valuesOf es.Head)

        testPropertyWithConfig { config with maxTest = 10 } "bernoulli is unbiased in expectation (statistical)" (fun (seed: int) ->
            // E[dare(x)] = x: the mean of 20000 survivors-or-zeros of x = 1 at density 0.3 is 1 ± 0.05 (≈ 4.6σ)
            let density = 0.3
            use x = torch.ones([| 20000L |])
            use noise = SeededNoise.Uniform(NoiseRequest("w", 0, [| 20000L |], int64 seed))
            use d = MergeOps.Dare(x, noise, density, DareRescale.Inverse)
            let m = d.mean().item<float32> ()
            abs (m - 1.0f) < 0.05f)

        prop "every TIES output entry has the elected sign or is 0" (fun (seed: int) ->
            // values are multiples of 1/8, so task vectors and the final subtraction are exact
            let b, es = world seed 3
            let bv = valuesOf b
            let r = run (Methods.ties 0.6 1.0 PerTensor MergeMean) (inputs (Some b) es)
            r |> Map.forall (fun k v ->
                let trimmed =
                    es |> List.map (fun e ->
                        use tv = vec [ for x in Array.map2 (-) (valuesOf e).[k] bv[k] -> float x ]
                        use t = MergeOps.TopK(tv, 0.6)
                        values t)
                let merged = Array.map2 (-) v bv[k]
                merged |> Array.mapi (fun i m ->
                    let elected = sign (trimmed |> List.sumBy (fun t -> float t[i]))
                    m = 0.0f || sign (float m) = elected)
                |> Array.forall id))

        prop "electSign: surviving entries carry the elected (mass) sign" (fun (seed: int) ->
            let rng = Random seed
            let stack = [| for _ in 1..3 -> vec (randomVec rng 7) |]
            let out = MergeOps.ElectSign(stack, SignRule.Mass) |> Array.map values
            let sums = Array.init 7 (fun i -> stack |> Array.sumBy (fun t -> float (values t).[i]))
            out |> Array.forall (fun o -> o |> Array.mapi (fun i v -> v = 0.0f || sign (float v) = sign sums[i]) |> Array.forall id))

        prop "scale composes: scale a ∘ scale b = scale (a·b)" (fun (seed: int) ->
            let b, _ = world seed 0
            let a, c = 0.5 + float (abs seed % 7), -0.25 * float (1 + abs seed % 3)
            let ins = inputs (Some b) []
            let x = run (Recipe.ofTensor (Recipe.baseModel |> Recipe.scale c |> Recipe.scale a)) ins
            let y = run (Recipe.ofTensor (Recipe.baseModel |> Recipe.scale (a * c))) ins
            x |> Map.forall (fun k v -> close 1e-6f y[k] v))

        prop "scale distributes over sum" (fun (seed: int) ->
            let b, es = world seed (nOf seed)
            let a = 0.3 + float (abs seed % 5)
            let ins = inputs (Some b) es
            let x = run (Recipe.ofTensor (Recipe.experts |> Recipe.sum |> Recipe.scale a)) ins
            let y = run (Recipe.ofTensor (Recipe.experts |> Recipe.scale a |> Recipe.sum)) ins
            x |> Map.forall (fun k v -> close 1e-5f y[k] v))

        prop "slerp endpoints: t = 0 is the first, t = 1 the second" (fun (seed: int) ->
            let b, es = world seed 1
            let ins = inputs (Some b) es
            run (Methods.slerp 0.0) ins = valuesOf b && run (Methods.slerp 1.0) ins = valuesOf es.Head)

        prop "if every expert equals the base, every method returns the base" (fun (seed: int) ->
            let b, _ = world seed 0
            let ins = inputs (Some b) (copies b 3)
            let opts = MergeOptions(Seed = int64 seed)
            let methods =
                [ Methods.average; Methods.taskArithmetic 0.7; Methods.ties 0.3 1.0 PerTensor MergeMean; Methods.ties 0.3 1.0 Global MergeSum
                  Methods.dareLinear 0.5 1.0 Inverse; Methods.dareTies 0.5 1.0 L1 MergeMean; Methods.breadcrumbs 0.5 0.1 1.0
                  Methods.breadcrumbsTies 0.5 0.1 1.0 MergeMean; Methods.della 0.5 0.1 1.0 MergeMean; Methods.modelStock; Methods.passthrough ]
            let expected = valuesOf b
            let ok = methods |> List.forall (fun m -> runWith opts m ins = expected)
            let slerpOk = run (Methods.slerp 0.3) (inputs (Some b) (copies b 1)) = expected
            ok && slerpOk)
    ]

/// The whole-tensor methods (NuSLERP, Multi-SLERP, Karcher, SCE, NearSwap, Arcee Fusion).
[<Tests>]
let wholeTensorLaws =
    let within tol (a: Map<string, float32[]>) (b: Map<string, float32[]>) = a |> Map.forall (fun k v -> close tol b[k] v)
    testList "Laws (whole-tensor methods)" [
        prop "multislerp and karcher of N copies of θ are θ" (fun (seed: int) ->
            let b, _ = world seed 1
            let ins = inputs None (copies b (2 + abs seed % 3))
            within 1e-5f (run (Methods.multislerp [] true false) ins) (valuesOf b)
            && within 1e-5f (run (Methods.karcher 10 1e-5) ins) (valuesOf b))

        prop "if every expert equals the base, sce, nearswap, arcee fusion and task-vector nuslerp return the base" (fun (seed: int) ->
            let b, _ = world seed 1
            let baseValues = valuesOf b
            let one = inputs (Some b) (copies b 1)
            let two = inputs (Some b) (copies b 2)
            within 0f (run (Methods.sce 0.5) two) baseValues
            && within 0f (run (Methods.nearswap 0.3) one) baseValues
            && within 0f (run Methods.arceeFusion one) baseValues
            && within 0f (run (Methods.nuslerp (1.0, 2.0) false true true) two) baseValues)

        prop "sce with one expert (select all) is that expert; nearswap with t = 0 is the base" (fun (seed: int) ->
            let b, es = world seed 1
            within 1e-6f (run (Methods.sce 1.0) (inputs (Some b) es)) (valuesOf es.Head)
            && within 0f (run (Methods.nearswap 0.0) (inputs (Some b) es)) (valuesOf b))

        prop "karcher, multislerp and sce do not depend on the experts' order" (fun (seed: int) ->
            let b, es = world seed 3
            let rev = List.rev es
            within 1e-5f (run (Methods.karcher 10 1e-5) (inputs None es)) (run (Methods.karcher 10 1e-5) (inputs None rev))
            && within 1e-5f (run (Methods.multislerp [] true false) (inputs None es)) (run (Methods.multislerp [] true false) (inputs None rev))
            && within 1e-5f (run (Methods.sce 0.5) (inputs (Some b) es)) (run (Methods.sce 0.5) (inputs (Some b) rev)))

        prop "the compiled graph and the reference interpreter agree on the new methods" (fun (seed: int) ->
            let b, es = world seed 2
            let recipes =
                [ Methods.nuslerp (1.0, 3.0) true false true, inputs (Some b) es
                  Methods.multislerp [ 1.0; 2.0 ] true true, inputs (Some b) es
                  Methods.karcher 10 1e-5, inputs None es
                  Methods.sce 0.5, inputs (Some b) es
                  Methods.nearswap 0.5, inputs (Some b) [ es.Head ]
                  Methods.arceeFusion, inputs (Some b) [ es.Head ] ]
            recipes |> List.forall (fun (r, ins) -> run r ins = reference MergeOptions.Default r ins))
    ]
