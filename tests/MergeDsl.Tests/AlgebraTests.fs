/// Unit tests of the tensor primitives and their helpers (bit keys, seeding, DSL rendering).
module MergeDsl.Tests.AlgebraTests

open System
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Ops
open MergeDsl.Tests.AlgebraSupport


[<Tests>]
let tests =
    testList "Algebra" [
        test "magnitude keys equal the float32 bit patterns of |x| (normals, subnormals, 0, inf)" {
            let xs = [| 0.0f; -0.0f; 1.0f; -1.5f; 3.4e38f; 1e-45f; -2.5e-40f; 1.17549435e-38f; 1e-3f; Single.PositiveInfinity; 123456.789f; -7.0e-10f |]
            let rng = Random 3
            let more = Array.init 200 (fun _ -> float32 (rng.NextDouble() - 0.5) * float32 (Math.Pow(10.0, float (rng.Next(-44, 38)))))
            let all = Array.append xs more
            use t = torch.tensor all
            use keys = MergeOps.MagnitudeBits t
            let got = keys.data<int64>().ToArray()
            let want = all |> Array.map (fun x -> int64 (BitConverter.SingleToInt32Bits(abs x)))
            Expect.equal got want "bit patterns"
        }

        test "seeds are a stable function of (seed, parameter, position)" {
            // FNV-1a 64 of "a" is a published test vector.
            Expect.equal (Seeding.Fnv1a64 "a") 0xaf63dc4c8601ec8cUL "FNV-1a"
            Expect.equal (Seeding.For(1L, "w", 0)) (Seeding.For(1L, "w", 0)) "same inputs"
            Expect.notEqual (Seeding.For(1L, "w", 0)) (Seeding.For(1L, "w", 1)) "position"
            Expect.notEqual (Seeding.For(1L, "w", 0)) (Seeding.For(2L, "w", 0)) "seed"
            Expect.notEqual (Seeding.For(1L, "w", 0)) (Seeding.For(1L, "v", 0)) "name"
            use a = SeededNoise.Uniform(NoiseRequest("w", 0, [| 5L |], 1L))
            use b = SeededNoise.Uniform(NoiseRequest("w", 0, [| 5L |], 1L))
            Expect.equal (values a) (values b) "same noise"
        }

        test "sign election by mass and by count" {
            // column sums: [1+1-3 = -1, ...]; counts: [+,+,- → +]
            let s = [| vec [ 1.0; 2.0 ]; vec [ 1.0; -1.0 ]; vec [ -3.0; -0.5 ] |]
            let mass = MergeOps.ElectSign(s, SignRule.Mass) |> Array.map values
            Expect.equal mass [| [| 0.0f; 2.0f |]; [| 0.0f; 0.0f |]; [| -3.0f; 0.0f |] |] "mass"
            let count = MergeOps.ElectSign(s, SignRule.Count) |> Array.map values
            Expect.equal count [| [| 1.0f; 0.0f |]; [| 1.0f; -1.0f |]; [| 0.0f; -0.5f |] |] "count"
        }

        test "disjoint mean divides by the nonzero count, at least 1" {
            let r = MergeOps.DisjointMean([| vec [ 2.0; 0.0; 1.0 ]; vec [ 4.0; 0.0; 0.0 ] |]) |> values
            Expect.equal r [| 3.0f; 0.0f; 1.0f |] "disjoint mean"
        }

        test "global top-k threshold keeps the tie quota in flat-index order" {
            use x = vec [ 1.0; 2.0; -1.0; 1.0 ]
            let bits = int64 (BitConverter.SingleToInt32Bits 1.0f)
            let struct (r, used) = MergeOps.ApplyThreshold(x, bits, 1L)
            Expect.equal (values r) [| 1.0f; 2.0f; 0.0f; 0.0f |] "above + first tie"
            Expect.equal used 1L "one tie used"
        }

        test "recipes render canonically" {
            let r =
                Recipe.select [ Recipe.rule "*.mlp.*" (Recipe.experts |> Recipe.mean) ]
                    (Recipe.experts |> Recipe.taskVectors |> Recipe.sparsify (Recipe.topK 0.2) |> Recipe.electSign Mass |> Recipe.disjointMean |> Recipe.scale 1.0 |> Recipe.addToBase)
            Expect.equal (Recipe.describe r)
                "*.mlp.* -> mean(experts)\n* (fallback) -> add(base, scale(disjointMean(electSign(sparsify(taskVectors(experts, base), topK(0.2)), mass)), 1))"
                "describe"
        }

        test "name patterns: globs span dots, re: is a full-match regex" {
            let g = NamePattern.Parse "*.mlp.*"
            Expect.isTrue (g.Matches "model.layers.0.mlp.fc1.weight") "glob"
            Expect.isFalse (g.Matches "model.layers.0.attn.weight") "glob miss"
            let r = NamePattern.Parse "re:.*norm.*"
            Expect.isTrue (r.Matches "ln.norm.weight") "regex"
            Expect.isFalse (NamePattern.Parse("re:norm").Matches "ln.norm.weight") "regex is anchored"
            Expect.isTrue (NamePattern.Parse("a.b").IsLiteral) "literal"
            Expect.throwsT<RecipeException> (fun () -> NamePattern.Parse "re:(" |> ignore) "bad regex"
        }

        test "MethodRegistry.byName builds recipes and rejects unknown names, parameters and values in one line" {
            match MethodRegistry.byName "ties" (Map [ "density", "0.2"; "scope", "global"; "merge", "sum" ]) with
            | Ok r ->
                Expect.equal r.Name "ties" "name"
                Expect.stringContains (r.Describe()) "topK(0.2, global)" "global topK"
                Expect.stringContains (r.Describe()) "sum(electSign" "sum merge"
            | Error e -> failtest e
            match MethodRegistry.byName "task_arithmetic" Map.empty with
            | Ok r -> Expect.equal r.Parameters["lambda"] "0.3" "TA default λ"
            | Error e -> failtest e
            let err name ps frag =
                match MethodRegistry.byName name (Map ps) with
                | Ok _ -> failtestf "expected an error for %s" name
                | Error e ->
                    Expect.stringContains e frag "message"
                    Expect.isFalse (e.Contains "\n") "one line"
            err "tie" [] "unknown method 'tie'"
            err "ties" [ "densty", "0.2" ] "no parameter 'densty'"
            err "ties" [ "density", "1.5" ] "density"
            err "ties" [ "density", "abc" ] "'abc' is not a number"
            err "ties" [ "scope", "model" ] "'model' is not one of tensor, global"
            err "weighted-average" [] "'weights' is required"
            err "dare-linear" [ "seed", "x" ] "seed"
        }
    ]
