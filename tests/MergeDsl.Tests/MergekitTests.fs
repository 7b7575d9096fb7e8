/// mergekit YAML configurations: parsing and validation (every key, with line numbers), mergekit's
/// rules in the core (floor k, sign tie, weighted election), gradients and filters, and
/// `mergedsl run config.yml` end to end on tiny Llama-named models against independent oracles.
module MergeDsl.Tests.MergekitTests

open System
open System.IO
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Ops
open MergeDsl.Tests.AlgebraSupport
open MergeDsl.Tests.CheckpointFixtures

let private f32 (xs: float list) = [| for x in xs -> float32 x |]

// Number operands through Scalars held for the whole native call (see the core's ScalarArgs).
type torch.Tensor with
    member x.Times(v: float) =
        use s = v.ToScalar()
        x.mul s
    member x.Over(v: float) =
        use s = v.ToScalar()
        x.div s
    member x.Plus(v: float) =
        use s = v.ToScalar()
        x.add s
    member x.Plus(t: torch.Tensor) =
        use one = (1.0).ToScalar()
        x.add(t, one)

/// A folder holding empty model folders `names` and a config.yml with `yaml`.
let private configIn (dir: TempDir) (names: string list) (yaml: string) =
    for n in names do
        Directory.CreateDirectory(dir.File n) |> ignore
    let path = dir.File "config.yml"
    File.WriteAllText(path, yaml)
    path

let private parseIn (yaml: string) =
    use dir = new TempDir()
    let path = configIn dir [ "base"; "a"; "b" ] yaml
    MergekitConfig.load path

let private expectError (yaml: string) (fragments: string list) =
    match parseIn yaml with
    | Ok _ -> failtest $"accepted:\n{yaml}"
    | Error msg ->
        Expect.isFalse (msg.Contains '\n') $"one line: {msg}"
        for f in fragments do
            Expect.stringContains msg f "names the fault"

let private ok (r: Result<'a, string>) =
    match r with
    | Ok v -> v
    | Error e -> failtest e

// ---------------------------------------------------------------- tiny Llama-named models

let private layers = 3

let private shapes =
    [ yield "model.embed_tokens.weight", [| 6L; 4L |]
      for l in 0 .. layers - 1 do
          yield $"model.layers.{l}.self_attn.q_proj.weight", [| 4L; 4L |]
          yield $"model.layers.{l}.mlp.gate_proj.weight", [| 5L; 4L |]
          yield $"model.layers.{l}.input_layernorm.weight", [| 4L |]
      yield "model.norm.weight", [| 4L |] ]

/// base, model-a, model-b beside a copy of the fixture; returns the config path and the tensors.
let private zooWith (dir: TempDir) (fixture: string) =
    torch.manual_seed 11L |> ignore
    let baseT = [ for n, s in shapes -> n, torch.randn(s) ]
    let expert () = [ for n, t in baseT -> n, t.Plus(torch.randn(t.shape).Times(0.5)) ]
    let a, b = expert (), expert ()
    MergeDsl.Tests.CliTests.writeModel (dir.File "base") baseT
    MergeDsl.Tests.CliTests.writeModel (dir.File "model-a") a
    MergeDsl.Tests.CliTests.writeModel (dir.File "model-b") b
    let path = dir.File(fixture + ".yml")
    File.Copy(Path.Combine(AppContext.BaseDirectory, "fixtures", "mergekit", fixture + ".yml"), path)
    path, Map.ofList baseT, Map.ofList a, Map.ofList b

let private layerOf (name: string) =
    let m = Text.RegularExpressions.Regex.Match(name, @"\.(\d+)\.")
    if m.Success then Some(int m.Groups[1].Value) else None

/// mergekit's t: i/(L−1) in the layers, 0 outside (independent of the code under test).
let private tOf (name: string) =
    match layerOf name with
    | Some i -> float i / float (layers - 1)
    | None -> 0.0

let private grad (xs: float list) (t: float) =
    let scaled = t * float (xs.Length - 1)
    let i0 = int (floor scaled)
    let i1 = min (xs.Length - 1) (i0 + 1)
    (1.0 - (scaled - float i0)) * xs[i0] + (scaled - float i0) * xs[i1]

let private d64 (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64)

/// mergekit's magnitude(): keep the int(density·n) largest |x|.
let private magnitude (x: torch.Tensor) (density: float) =
    if density >= 1.0 then x
    else
        let n = x.numel()
        let k = int64 (density * float n)
        let flat = x.flatten()
        let mask = torch.zeros_like(flat)
        let idx = flat.abs().argsort(descending = true).slice(0L, 0L, k, 1L)
        mask.index_put_(torch.ones([| k |], dtype = flat.dtype), idx) |> ignore
        flat.mul(mask).reshape(x.shape)

/// mergekit's magnitude_outliers().
let private outliers (x: torch.Tensor) (density: float) (gamma: float) =
    let n = x.numel()
    let target = int64 (density * float n)
    let top = int64 (gamma * float n)
    let bot = n - target - top
    let top, bot = if bot < 0L then top + bot, 0L else top, bot
    let flat = x.flatten()
    let order = flat.abs().argsort(descending = false)
    let idx = order.slice(0L, bot, n - top, 1L)
    let mask = torch.zeros_like(flat)
    mask.index_put_(torch.ones([| idx.numel() |], dtype = flat.dtype), idx) |> ignore
    flat.mul(mask).reshape(x.shape)

let private sumAll (xs: torch.Tensor list) = xs |> List.reduce (fun (a: torch.Tensor) (b: torch.Tensor) -> a.Plus b)

/// mergekit's GTA task body for deltas τᵢ and weights wᵢ.
let private gta (baseT: torch.Tensor) (deltas: torch.Tensor list) (ws: float list) consensus normalize (lambda: float) =
    let weighted = List.map2 (fun (d: torch.Tensor) (w: float) -> d.Times w) deltas ws
    let mixed, divisor =
        if consensus then
            let majority = (sumAll weighted).ge(torch.tensor 0.0).to_type(torch.ScalarType.Float64).Times(2.0).Plus(-1.0)
            let masks = weighted |> List.map (fun (x: torch.Tensor) -> x.sign().eq(majority: torch.Tensor).to_type(torch.ScalarType.Float64))
            let mixed = List.map2 (fun (x: torch.Tensor) (m: torch.Tensor) -> x.mul m) weighted masks |> sumAll
            let div = List.map2 (fun (m: torch.Tensor) (w: float) -> m.Times w) masks ws |> sumAll
            mixed, torch.where(div.eq(torch.tensor 0.0), torch.ones_like div, div)
        else
            let total = List.sum ws
            sumAll weighted, torch.ones_like(baseT).Times(if abs total < 1e-8 then 1.0 else total)
    let mixed: torch.Tensor = if normalize then mixed.div divisor else mixed
    baseT.Plus(mixed.Times lambda)

let private slerpOracle (t: float) (a: torch.Tensor) (b: torch.Tensor) =
    let na, nb = a.norm().item<float>(), b.norm().item<float>()
    let dot = a.flatten().dot(b.flatten()).item<float>() / (na * nb)
    if abs dot > 0.9995 then a.Times(1.0 - t).Plus(b.Times t)
    else
        let theta = acos dot
        a.Times(sin ((1.0 - t) * theta) / sin theta).Plus(b.Times(sin (t * theta) / sin theta))

let private modelStockOracle (baseT: torch.Tensor) (xs: torch.Tensor list) =
    let offs = xs |> List.map (fun (x: torch.Tensor) -> x.sub(baseT).flatten())
    let cos =
        [ for i in 0 .. offs.Length - 1 do
              for j in i + 1 .. offs.Length - 1 ->
                  offs[i].dot(offs[j]).item<float>() / (offs[i].norm().item<float>() * offs[j].norm().item<float>()) ]
        |> List.average
    let n = float xs.Length
    let t = n * cos / (1.0 + (n - 1.0) * cos)
    (sumAll xs).Over(n).Times(t).Plus(baseT.Times(1.0 - t))

/// Runs `mergedsl run fixture.yml` and compares every tensor with the oracle (in the output dtype).
let private endToEnd (fixture: string) (oracle: string -> torch.Tensor -> torch.Tensor -> torch.Tensor -> torch.Tensor) (tolerance: float) =
    use dir = new TempDir()
    let path, b, a, m = zooWith dir fixture
    let out = dir.File "out"
    let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--out"; out; "--quiet" ]
    Expect.equal code 0 $"exit code ({err})"
    let got = MergeDsl.Tests.CliTests.loadAll out
    Expect.equal (got |> Map.keys |> Set.ofSeq) (shapes |> List.map fst |> Set.ofList) "every tensor written"
    let mutable worst = 0.0
    for name, _ in shapes do
        let g = got[name]
        let expected = oracle name (d64 b[name]) (d64 a[name]) (d64 m[name])
        let diff = d64(g).sub(expected.to_type(g.dtype) |> d64).abs().max().item<float>()
        worst <- max worst diff
        Expect.isLessThanOrEqual diff tolerance $"{fixture}: {name} (max |diff| {diff})"
    // The largest difference to the formula, for reports (docs/mergekit.md's table of differences).
    if not (isNull (Environment.GetEnvironmentVariable "MERGEDSL_REPORT_DIFF")) then printfn "mergekit-diff %s %g" fixture worst
    got

[<Tests>]
let tests =
    testList "Mergekit" [
        testList "golden rules" [
            test "top-k keeps ⌊density·n⌋ with floor rounding, round(density·n) by default" {
                // n = 5, density 0.5: round(2.5) = 3 kept (5, -3, 2); ⌊2.5⌋ = 2 kept (5, -3).
                let x () = vec [ 1.0; 5.0; -3.0; 2.0; 0.5 ]
                Expect.equal (values (MergeOps.TopK(x (), 0.5))) (f32 [ 0.0; 5.0; -3.0; 2.0; 0.0 ]) "nearest"
                Expect.equal (values (MergeOps.TopK(x (), 0.5, KeepRounding.Floor))) (f32 [ 0.0; 5.0; -3.0; 0.0; 0.0 ]) "floor"
                // density 0.1 of 5: round(0.5) = 1 (keeps 5); ⌊0.5⌋ = 0 keeps nothing.
                Expect.equal (values (MergeOps.TopK(x (), 0.1, KeepRounding.Floor))) (f32 [ 0.0; 0.0; 0.0; 0.0; 0.0 ]) "floor to 0"
                Expect.equal (MergeOps.KeepCount(0.7, 10L, KeepRounding.Floor)) 7L "0.7·10 = 7 (no float drift below 7)"
            }
            test "breadcrumbs floors both counts under mergekit's rule" {
                // x = 1..10; density 0.5, gamma 0.15: nearest drops round(1.5) = 2 outliers (10, 9), keeps
                // 8..4; floor drops ⌊1.5⌋ = 1 (10), keeps 9..5.
                let x () = vec [ 1.0; 2.0; 3.0; 4.0; 5.0; 6.0; 7.0; 8.0; 9.0; 10.0 ]
                Expect.equal (values (MergeOps.Breadcrumbs(x (), 0.5, 0.15))) (f32 [ 0.; 0.; 0.; 4.; 5.; 6.; 7.; 8.; 0.; 0. ]) "nearest"
                Expect.equal (values (MergeOps.Breadcrumbs(x (), 0.5, 0.15, KeepRounding.Floor))) (f32 [ 0.; 0.; 0.; 0.; 5.; 6.; 7.; 8.; 9.; 0. ]) "floor"
            }
            test "a zero vote elects 0 by default and +1 under mergekit's rule (kernel and op paths)" {
                // sums: [0, 0, -1]. Zero: elements 0 and 1 drop everything. Positive: +1 keeps the positive entries.
                for dtype in [ torch.ScalarType.Float32; torch.ScalarType.Float64 ] do
                    let s () = [| (vec [ 1.0; -1.0; 2.0 ]).to_type dtype; (vec [ -1.0; 1.0; -3.0 ]).to_type dtype |]
                    let zero = MergeOps.ElectSign(s (), SignRule.Mass) |> Array.map values
                    let pos = MergeOps.ElectSign(s (), SignRule.Mass, SignTie.Positive) |> Array.map values
                    Expect.equal zero [| f32 [ 0.0; 0.0; 0.0 ]; f32 [ 0.0; 0.0; -3.0 ] |] $"zero tie ({dtype})"
                    Expect.equal pos [| f32 [ 1.0; 0.0; 0.0 ]; f32 [ 0.0; 1.0; -3.0 ] |] $"positive tie ({dtype})"
                    // count rule: votes [0, 0, 0] → +1 everywhere: only the positive entries survive.
                    let count = MergeOps.ElectSign(s (), SignRule.Count, SignTie.Positive) |> Array.map values
                    Expect.equal count [| f32 [ 1.0; 0.0; 2.0 ]; f32 [ 0.0; 1.0; 0.0 ] |] $"count, positive tie ({dtype})"
            }
            test "weighted election and Σ wτ·mask / Σ w·mask (mergekit's TIES with per-model weights)" {
                // base 0; τ1 = [2, -1], τ2 = [-4, 8]; w = [1, 0.25]. Weighted: [2, -1], [-1, 2]; sums [1, 1] → +, +.
                // element 0: keeps 2 (model 1) → 2 / 1 = 2; element 1: keeps 2 (model 2) → 2 / 0.25 = 8.
                // (Unweighted election would elect − at element 0: sum −2.)
                let ins =
                    inputs (Some(model "base" [ "w", vec [ 0.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 2.0; -1.0 ] ]; model "e2" [ "w", vec [ -4.0; 8.0 ] ] ]
                let tv = Recipe.experts |> Recipe.taskVectors
                let recipe =
                    Recipe.stackOf [ tv |> Recipe.pick 0; tv |> Recipe.pick 1 |> Recipe.scale 0.25 ]
                    |> Recipe.electSignWith Mass PositiveSign
                    |> Recipe.disjointWeightedMean [ 1.0; 0.25 ]
                    |> Recipe.addTo Recipe.baseModel
                    |> Recipe.ofTensor
                let r = run recipe ins
                Expect.equal r["w"] (f32 [ 2.0; 8.0 ]) "weighted TIES"
                // a divisor of 0 (every entry dropped) becomes 1: τ = [1], [-1] with w = [1, 1], sum 0 → +1 keeps 1 → 1/1.
                let ins2 = inputs (Some(model "base" [ "w", vec [ 0.0 ] ])) [ model "e1" [ "w", vec [ 1.0 ] ]; model "e2" [ "w", vec [ -1.0 ] ] ]
                let r2 = Recipe.experts |> Recipe.taskVectors |> Recipe.electSignWith Mass PositiveSign |> Recipe.disjointWeightedMean [ 1.0; 1.0 ] |> Recipe.ofTensor
                let out2 = run r2 ins2
                Expect.equal out2["w"] (f32 [ 1.0 ]) "tie elects +1"
            }
            test "registry: rules=mergekit floors k and elects +1 on a zero vote; paper rules stay the default" {
                // base 0; τ1 = [1, -1, 3, 0.5], τ2 = [-1, 1, 1, 0.25]; density 0.5 of n = 4 → k = 2 either way.
                // τ1 keeps 3 and, of the equal magnitudes 1, the lower index: [1, 0, 3, 0]; τ2 keeps indices 0, 1:
                // [-1, 1, 0, 0]. Votes [0, 1, 3, 0]. Paper: element 0 elects 0 → 0; element 1: 1; element 2: 3 →
                // [0, 1, 3, 0]. mergekit: element 0 elects +1 and keeps τ1's 1 → [1, 1, 3, 0].
                let ins = inputs (Some(model "base" [ "w", vec [ 0.0; 0.0; 0.0; 0.0 ] ])) [ model "e1" [ "w", vec [ 1.0; -1.0; 3.0; 0.5 ] ]; model "e2" [ "w", vec [ -1.0; 1.0; 1.0; 0.25 ] ] ]
                let paper = ok (MethodRegistry.byName "ties" (Map [ "density", "0.5" ]))
                let mk = ok (MethodRegistry.byName "ties" (Map [ "density", "0.5"; "rules", "mergekit" ]))
                let rp, rm = run paper ins, run mk ins
                Expect.equal rp["w"] (f32 [ 0.0; 1.0; 3.0; 0.0 ]) "paper: a zero vote drops the element"
                Expect.equal rm["w"] (f32 [ 1.0; 1.0; 3.0; 0.0 ]) "mergekit: a zero vote elects +1"
                Expect.stringContains (mk.Describe()) "topK(0.5, floor)" "floor rounding"
                Expect.equal mk.Parameters["rules"] "mergekit" "recorded"
                Expect.isFalse (paper.Describe().Contains "floor") "paper rules unchanged"
                match MethodRegistry.byName "ties" (Map [ "scope", "global"; "rules", "mergekit" ]) with
                | Ok _ -> failtest "global scope with mergekit rules accepted"
                | Error e -> Expect.stringContains e "rules" "names the parameter"
            }
            test "gradients: mergekit's interpolation at the first, middle and last layer" {
                // L = 5, anchors [0, 0.5, 0.3, 0.7, 1]: layer 0 → t 0 → 0; layer 2 → t 0.5 → scaled 2 → 0.3;
                // layer 4 → t 1 → 1; layer 1 → t 0.25 → scaled 1 → 0.5.
                let a = [ 0.0; 0.5; 0.3; 0.7; 1.0 ]
                Expect.equal (MergekitConfig.interpolate a (MergekitConfig.layerT 5 (Some 0))) 0.0 "first"
                Expect.floatClose Accuracy.veryHigh (MergekitConfig.interpolate a (MergekitConfig.layerT 5 (Some 2))) 0.3 "middle"
                Expect.equal (MergekitConfig.interpolate a (MergekitConfig.layerT 5 (Some 4))) 1.0 "last"
                // L = 4, [1, 0.7, 0.1]: layer 1 → t 1/3 → scaled 2/3 → 1·(1/3) + 0.7·(2/3) = 0.8.
                Expect.floatClose Accuracy.veryHigh (MergekitConfig.interpolate [ 1.0; 0.7; 0.1 ] (MergekitConfig.layerT 4 (Some 1))) 0.8 "between anchors"
                Expect.equal (MergekitConfig.layerT 1 (Some 0)) 1.0 "one layer: t = 1 (mergekit)"
                Expect.equal (MergekitConfig.layerT 4 None) 0.0 "outside the layers: t = 0"
            }
            test "gradients and filters through a recipe: weight per layer and per module" {
                // base 0, expert 1 everywhere; L = 3. weight: self_attn → [0, 1] (layer 0: 0, 1: 0.5, 2: 1);
                // mlp → 3; everything else (embeddings, norms) → 0.25 (t = 0 outside the layers).
                use dir = new TempDir()
                let path =
                    configIn dir [ "base"; "a" ]
                        "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      weight:\n        - filter: self_attn\n          value: [0, 1]\n        - filter: mlp\n          value: 3\n        - value: 0.25\n"
                let config = ok (MergekitConfig.load path)
                let recipe = ok (MergekitConfig.toRecipe 3 config)
                let names =
                    [ "model.embed_tokens.weight"; "model.norm.weight" ]
                    @ [ for l in 0..2 do
                            yield $"model.layers.{l}.self_attn.q_proj.weight"
                            yield $"model.layers.{l}.mlp.gate_proj.weight"
                            yield $"model.layers.{l}.input_layernorm.weight" ]
                let ins = inputs (Some(model "base" [ for n in names -> n, vec [ 0.0 ] ])) [ model "a" [ for n in names -> n, vec [ 1.0 ] ] ]
                let r = run recipe ins
                let expect =
                    [ "model.embed_tokens.weight", 0.25; "model.norm.weight", 0.25
                      "model.layers.0.self_attn.q_proj.weight", 0.0; "model.layers.1.self_attn.q_proj.weight", 0.5
                      "model.layers.2.self_attn.q_proj.weight", 1.0; "model.layers.0.mlp.gate_proj.weight", 3.0
                      "model.layers.2.mlp.gate_proj.weight", 3.0; "model.layers.1.input_layernorm.weight", 0.25 ]
                for n, v in expect do
                    Expect.equal r[n] (f32 [ v ]) n
            }
        ]
        testList "parsing" [
            test "every supported key and method parses" {
                let methods =
                    [ "linear", "models:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 2}\nparameters:\n  normalize: false\n"
                      "task_arithmetic", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: [0.5, 1]}\nparameters:\n  lambda: 0.5\n  normalize: true\n  int8_mask: true\n"
                      "ties", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4}\n  - model: b\n    parameters: {weight: 1, density: [0.2, 0.8]}\nparameters:\n  rescale: false\n"
                      "dare_ties", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4}\nparameters:\n  rescale: false\n"
                      "dare_linear", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4}\n"
                      "breadcrumbs", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4, gamma: 0.02}\n"
                      "breadcrumbs_ties", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4, gamma: 0.02}\n"
                      "della", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4, epsilon: 0.05}\n"
                      "della_linear", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.4, epsilon: 0.05}\n"
                      "model_stock", "base_model: base\nmodels:\n  - model: a\n  - model: b\nparameters:\n  filter_wise: false\n"
                      "slerp", "base_model: base\nmodels:\n  - model: base\n  - model: a\nparameters:\n  t: [0, 1]\n"
                      "passthrough", "models:\n  - model: a\n    parameters:\n      scale: 2\n" ]
                for name, body in methods do
                    let yaml = $"merge_method: {name}\n{body}dtype: bfloat16\nout_dtype: float16\ntokenizer_source: base\n"
                    let config = ok (parseIn yaml)
                    Expect.equal config.Method name "method"
                    Expect.equal config.OutDType (Some "f16") "out_dtype wins over dtype"
                    match MergekitConfig.toRecipe 4 config with
                    | Ok r -> Expect.equal r.Name name "recipe name"
                    | Error e -> failtest $"{name}: {e}"
            }
            test "an unknown or misspelled key is named with its line" {
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\nmerge_methd: x\n" [ "config.yml:5:"; "'merge_methd'" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      wieght: 1\n" [ ":6:"; "'wieght'"; "models[0].parameters" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    paramters:\n      weight: 1\n" [ ":5:"; "'paramters'" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\nparameters:\n  weight:\n    - filter: mlp\n      valeu: 1\n" [ ":8:"; "'valeu'" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      lambda: 1\n" [ ":6:"; "top-level parameters" ]
                expectError "merge_method: slerp\nbase_model: base\nmodels:\n  - model: a\nparameters:\n  t: 0.5\n  density: 0.5\n" [ ":7:"; "'density'" ]
            }
            test "wrong types and values are named with their line" {
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      density: abc\n" [ ":6:"; "'abc' is not a number" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      density: 1.5\n" [ ":6:"; "1.5 is outside (0, 1]" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\nparameters:\n  normalize: 3\n" [ ":6:"; "not true or false" ]
                expectError "merge_method: ties\nbase_model: base\nmodels: 5\n" [ ":3:"; "expected a list" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      weight: []\n" [ ":6:"; "empty gradient" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\ndtype: int4\n" [ ":5:"; "'int4'" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n  bad: [\n" [ "config.yml:"; "not valid YAML" ]
                expectError "merge_method: ties\nbase_model: base\nmerge_method: linear\nmodels:\n  - model: a\n" [ "config.yml:3:"; "Duplicate key" ]
            }
            test "unknown, later and incomplete methods, unsupported features" {
                expectError "merge_method: foo\nmodels:\n  - model: a\n" [ ":1:"; "unknown merge_method 'foo'"; "ties" ]
                expectError "merge_method: ram\nmodels:\n  - model: a\n" [ ":1:"; "not supported yet" ]
                expectError "merge_method: ties\nmodels:\n  - model: a\n" [ "needs base_model" ]
                expectError "merge_method: slerp\nbase_model: base\nmodels:\n  - model: a\n  - model: b\nparameters:\n  t: 0.5\n" [ "exactly one other model" ]
                expectError "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n" [ ":4:"; "slices[0].sources[0]: 'layer_range' is missing" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\nembed_slerp: true\n" [ ":5:"; "embed_slerp"; "not supported" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: org/some-model\n" [ ":4:"; "org/some-model: not in the Hugging Face cache" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a+lora\n" [ ":4:"; "a+lora: lora: no such adapter folder or file"; "not in the Hugging Face cache" ]
            }
            test "a model without its required weight fails before any tensor is read" {
                let config = ok (parseIn "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      weight:\n        - filter: mlp\n          value: 1\n")
                match MergekitConfig.toRecipe 2 config with
                | Ok _ -> failtest "accepted a model without weight for non-mlp tensors"
                | Error e -> Expect.stringContains e "has no 'weight'" "names the parameter"
            }
        ]
        // The CLI tests swap Console.Out/Error: never in parallel with other output.
        testSequenced <| testList "mergedsl run config.yml" [
            test "linear" {
                endToEnd "linear" (fun _ _ a b -> a.Plus(b.Times 0.5).Over 1.5) 1e-6 |> ignore
            }
            test "task_arithmetic" {
                endToEnd "task_arithmetic" (fun _ z a b -> gta z [ a.sub z; b.sub z ] [ 0.7; 0.3 ] false false 0.9) 1e-6 |> ignore
            }
            test "ties (density and weight gradients, normalize, float16 out)" {
                endToEnd "ties" (fun name z a b ->
                    let t = tOf name
                    let da = magnitude (a.sub z) (grad [ 1.0; 0.7; 0.1 ] t)
                    let db = magnitude (b.sub z) 0.5
                    gta z [ da; db ] [ 1.0; grad [ 0.0; 0.3; 0.7; 1.0 ] t ] true true 1.0) 2e-3 |> ignore
            }
            test "breadcrumbs (floor counts, per-model gamma)" {
                endToEnd "breadcrumbs" (fun _ z a b ->
                    gta z [ outliers (a.sub z) 0.5 0.1; outliers (b.sub z) 0.7 0.01 ] [ 0.6; 0.4 ] false false 1.0) 1e-6 |> ignore
            }
            test "breadcrumbs_ties (top-level density and gamma, no normalize)" {
                endToEnd "breadcrumbs_ties" (fun _ z a b ->
                    gta z [ outliers (a.sub z) 0.6 0.05; outliers (b.sub z) 0.6 0.05 ] [ 1.0; 0.5 ] true false 1.0) 1e-6 |> ignore
            }
            test "slerp (t filtered by module and interpolated over layers)" {
                endToEnd "slerp" (fun name z a _ ->
                    let t =
                        if name.Contains "self_attn" then grad [ 0.0; 0.5; 0.3; 0.7; 1.0 ] (tOf name)
                        elif name.Contains "mlp" then grad [ 1.0; 0.5; 0.7; 0.3; 0.0 ] (tOf name)
                        else 0.5
                    slerpOracle t z a) 1e-6 |> ignore
            }
            test "model_stock" {
                endToEnd "model_stock" (fun _ z a b -> modelStockOracle z [ a; b ]) 1e-6 |> ignore
            }
            test "passthrough" {
                endToEnd "passthrough" (fun _ _ a _ -> a) 0.0 |> ignore
            }
            // DARE and DELLA draw MergeDsl's seeded masks (mergekit's torch.bernoulli draws cannot be
            // reproduced): the run must equal the same recipe evaluated in process, and the structure
            // of the survivors must follow mergekit's rules.
            for fixture in [ "dare_ties"; "dare_linear"; "della" ] do
                test fixture {
                    use dir = new TempDir()
                    let path, b, a, m = zooWith dir fixture
                    let config = ok (MergekitConfig.load path)
                    let recipe = ok (MergekitConfig.toRecipe layers config)
                    let text = recipe.Describe()
                    match fixture with
                    | "dare_linear" -> Expect.stringContains text "bernoulli(0.6, l1)" "mergekit rescales DARE by the L1 norm"
                    | "dare_ties" -> Expect.stringContains text "tie+" "mergekit's sign tie"
                    | _ ->
                        Expect.stringContains text "della(0.5, 0.1, norescale, dim1)" "DELLA ranked along dim 1 as mergekit"
                        Expect.stringContains text "rescaleL1" "mergekit's L1 rescale (rescale: true)"
                    let out = dir.File "out"
                    let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--out"; out; "--quiet" ]
                    Expect.equal code 0 $"exit code ({err})"
                    let got = MergeDsl.Tests.CliTests.loadAll out
                    let ins =
                        inputs (Some(model "base" [ for n, _ in shapes -> n, b[n] ]))
                            [ model "model-a" [ for n, _ in shapes -> n, a[n] ]; model "model-b" [ for n, _ in shapes -> n, m[n] ] ]
                    let expected = run recipe ins
                    for n, _ in shapes do
                        let g = got[n]
                        let e = torch.tensor(expected[n]).reshape(g.shape).to_type(g.dtype)
                        Expect.isTrue (MergeDsl.Tests.CliTests.identical g e) $"{fixture}: {n} equals the in-process recipe"
                }
            test "plan and import accept the config; --model with a config is refused" {
                use dir = new TempDir()
                let path, _, _, _ = zooWith dir "ties"
                let code, out, err = MergeDsl.Tests.CliTests.mergedsl [ "plan"; path ]
                Expect.equal code 0 $"plan ({err})"
                Expect.stringContains out "ties" "plan names the recipe"
                let code, script, err = MergeDsl.Tests.CliTests.mergedsl [ "import"; path ]
                Expect.equal code 0 $"import ({err})"
                Expect.stringContains script "Recipe.electSignWith Mass PositiveSign" "mergekit's election"
                Expect.stringContains script "Recipe.topKRounded Floor 0.7" "layer 1 of 3: density gradient [1, 0.7, 0.1] at t = 0.5"
                Expect.stringContains script "let recipe =" "binds recipe"
                let out = dir.File "out"
                let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--model"; dir.File "model-a"; "--out"; out ]
                Expect.equal code 2 "usage error"
                Expect.stringContains err "drop --base and --model" "names the conflict"
                Expect.isFalse (Directory.Exists out) "nothing written"
            }
            test "the imported F# recipe runs and gives the same model as the YAML" {
                use dir = new TempDir()
                let path, _, _, _ = zooWith dir "ties"
                let script = dir.File "ties.fsx"
                let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "import"; path; "--out"; script ]
                Expect.equal code 0 $"import ({err})"
                let fromYaml, fromScript = dir.File "out-yaml", dir.File "out-fsx"
                let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--out"; fromYaml; "--quiet" ]
                Expect.equal code 0 $"run yaml ({err})"
                let code, _, err =
                    MergeDsl.Tests.CliTests.mergedsl
                        [ "run"; script; "--base"; dir.File "base"; "--model"; dir.File "model-a"; "--model"; dir.File "model-b"
                          "--dtype"; "f16"; "--out"; fromScript; "--quiet" ]
                Expect.equal code 0 $"run fsx ({err})"
                let a, b = MergeDsl.Tests.CliTests.loadAll fromYaml, MergeDsl.Tests.CliTests.loadAll fromScript
                for n, _ in shapes do
                    Expect.isTrue (MergeDsl.Tests.CliTests.identical a[n] b[n]) $"{n}: script and YAML agree"
            }
            test "a bad config exits 2 with one line and writes nothing" {
                use dir = new TempDir()
                let path, _, _, _ = zooWith dir "ties"
                File.WriteAllText(path, File.ReadAllText(path).Replace("int8_mask", "int8_mask_typo"))
                let out = dir.File "out"
                let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--out"; out ]
                Expect.equal code 2 "usage error"
                Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
                Expect.stringContains err "ties.yml:16: parameters: unknown parameter 'int8_mask_typo'" "file, line, key"
                Expect.isFalse (Directory.Exists out) "nothing written"
            }
        ]
    ]

// ---------------------------------------------------------------- the whole-tensor methods, against
// scalar re-implementations of mergekit's formulas (plain float arrays; nothing of the code under test)

let private arr (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).contiguous().data<float>().ToArray()
let private ofArr (shape: int64[]) (xs: float[]) = torch.tensor(xs).reshape(shape)
let private dot (a: float[]) (b: float[]) = Array.fold2 (fun s x y -> s + x * y) 0.0 a b
let private norm (a: float[]) = sqrt (dot a a)

/// mergekit's nuslerp() on vectors: normalise with the norm clamped at 1e-7, lerp when |sin θ| < 1e-8.
let private nuslerpVec (t: float) (v0: float[]) (v1: float[]) =
    let u0 = v0 |> Array.map (fun x -> x / max (norm v0) 1e-7)
    let u1 = v1 |> Array.map (fun x -> x / max (norm v1) 1e-7)
    let theta = acos (max -1.0 (min 1.0 (dot u0 u1)))
    let s = sin theta
    if abs s < 1e-8 then Array.map2 (fun a b -> (1.0 - t) * a + t * b) v0 v1
    else Array.map2 (fun a b -> (sin ((1.0 - t) * theta) * a + sin (t * theta) * b) / s) v0 v1

/// nuslerp with nuslerp_flatten false (rows = vectors along the last dimension).
let private nuslerpRows (t: float) (x0: torch.Tensor) (x1: torch.Tensor) =
    let w = if x0.dim() >= 2L then int x0.shape[x0.shape.Length - 1] else int (x0.numel())
    let a, b = arr x0, arr x1
    let out = [| for r in 0 .. a.Length / w - 1 do yield! nuslerpVec t a[r * w .. r * w + w - 1] b[r * w .. r * w + w - 1] |]
    ofArr x0.shape out

/// mergekit's multislerp() (no base), eps 1e-8.
let private multislerpOracle (ws: float[]) (xs: float[][]) =
    let eps = 1e-8
    let w = ws |> Array.map (fun x -> x / Array.sum ws)
    let norms = xs |> Array.map norm
    let units = Array.map2 (fun (x: float[]) n -> x |> Array.map (fun v -> v / (n + eps))) xs norms
    let wsum (vs: float[][]) = Array.init vs[0].Length (fun j -> Array.fold2 (fun s (v: float[]) wi -> s + wi * v[j]) 0.0 vs w)
    let mean = wsum units
    let mean = mean |> Array.map (fun v -> v / norm mean)
    let tangents = units |> Array.map (fun u -> let d = dot u mean in Array.map2 (fun a m -> a - d * m) u mean)
    let tr = wsum tangents
    let tn = norm tr + eps
    let avg = Array.fold2 (fun s n wi -> s + n * wi) 0.0 norms w
    Array.map2 (fun m v -> (m * cos tn + v * sin tn / tn) * avg) mean tr

/// mergekit's karcher_merge_tensors() with equal weights.
let private karcherOracle (maxIter: int) (tol: float) (xs: float[][]) =
    let alphas = Array.create xs.Length (1.0 / float xs.Length)
    let norms = xs |> Array.map norm
    let valid = [| for i in 0 .. xs.Length - 1 do if norms[i] > tol then yield i |]
    let a = valid |> Array.map (fun i -> alphas[i] / Array.sum [| for j in valid -> alphas[j] |])
    let units = valid |> Array.map (fun i -> xs[i] |> Array.map (fun v -> v / norms[i]))
    let mutable u = Array.init xs[0].Length (fun j -> Array.fold2 (fun s (ui: float[]) ai -> s + ai * ui[j]) 0.0 units a)
    let nu = norm u
    u <- if nu < tol then Array.copy units[0] else u |> Array.map (fun v -> v / nu)
    let mutable iter = 0
    let mutable stop = false
    while not stop && iter < maxIter do
        let T = Array.zeroCreate u.Length
        for k in 0 .. units.Length - 1 do
            let d = max -1.0 (min 1.0 (dot u units[k]))
            let theta = acos d
            if theta >= tol then
                for j in 0 .. u.Length - 1 do
                    T[j] <- T[j] + a[k] * (theta / sin theta) * (units[k][j] - d * u[j])
        let nT = norm T
        if nT < tol then stop <- true
        else
            u <- Array.map2 (fun x y -> cos nT * x + sin nT * y / nT) u T
            let n = norm u
            if n > tol then u <- u |> Array.map (fun v -> v / n)
        iter <- iter + 1
    let s = Array.fold2 (fun acc al n -> acc + al * n) 0.0 alphas norms
    u |> Array.map (fun v -> s * v)

/// mergekit's sce_merge() on task vectors.
let private sceOracle (topk: float) (taus: float[][]) =
    let n = taus.Length
    let m = taus[0].Length
    let taus =
        if topk >= 1.0 then taus
        else
            let var = Array.init m (fun j -> let mu = (taus |> Array.sumBy (fun t -> t[j])) / float n in (taus |> Array.sumBy (fun t -> (t[j] - mu) ** 2.0)) / float n)
            let k = int (float (var |> Array.filter ((<>) 0.0) |> Array.length) * topk)
            let keep = var |> Array.indexed |> Array.sortByDescending snd |> Array.truncate k |> Array.map fst |> Set.ofArray
            taus |> Array.map (Array.mapi (fun j v -> if keep.Contains j then v else 0.0))
    let majority = Array.init m (fun j -> if (taus |> Array.sumBy (fun t -> t[j])) >= 0.0 then 1.0 else -1.0)
    let w = taus |> Array.map (fun t -> (t |> Array.sumBy (fun v -> v * v)) / float m)
    let ws = Array.sum w
    let w = if abs ws < 1e-6 then Array.create n (1.0 / float n) else w |> Array.map (fun x -> x / ws)
    Array.init m (fun j ->
        let ew = Array.init n (fun i -> let v = taus[i][j] in if float (sign v) = majority[j] then w[i] else 0.0)
        let num = Array.fold2 (fun s e (t: float[]) -> s + e * t[j]) 0.0 ew taus
        num / max (Array.sum ew) 1e-6)

/// mergekit's ArceeFusionMergeTask on one tensor (rows along the last dimension; exact quantiles).
let private arceeOracle (x0: torch.Tensor) (x1: torch.Tensor) =
    let w = if x0.dim() >= 2L then int x0.shape[x0.shape.Length - 1] else int (x0.numel())
    let a, b = arr x0, arr x1
    let softmax (v: float[]) = let mx = Array.max v in let e = v |> Array.map (fun x -> exp (x - mx)) in e |> Array.map (fun x -> x / Array.sum e)
    let imp =
        [| for r in 0 .. a.Length / w - 1 do
               let ra, rb = a[r * w .. r * w + w - 1], b[r * w .. r * w + w - 1]
               let p = softmax rb |> Array.map ((+) 1e-8)
               let q = softmax ra |> Array.map ((+) 1e-8)
               let kl = Array.fold2 (fun s pi qi -> s + pi * log (pi / qi)) 0.0 p q
               yield! Array.map2 (fun x y -> abs (y - x) * kl) ra rb |]
    let sorted = Array.sort imp
    let q (f: float) = sorted[int (f * float (sorted.Length - 1))]
    let threshold = q 0.5 + 1.5 * (q 0.75 - q 0.25)
    ofArr x0.shape (Array.init a.Length (fun i -> if imp[i] >= threshold then b[i] else a[i]))

/// Runs each tensor's arrays through `f` and reshapes back.
let private perTensor (f: float[][] -> float[]) (xs: torch.Tensor list) = ofArr xs.Head.shape (f [| for x in xs -> arr x |])

[<Tests>]
let wholeTensorMethods =
    testSequenced <| testList "Mergekit whole-tensor methods" [
        test "nuslerp (base_model: task vectors per row at t = 0.7/(0.3 + 0.7))" {
            endToEnd "nuslerp" (fun _ z a b -> z.Plus(nuslerpRows 0.7 (a.sub z) (b.sub z))) 1e-5 |> ignore
        }
        test "multislerp (no base, weights 1 and 2)" {
            endToEnd "multislerp" (fun _ _ a b -> perTensor (multislerpOracle [| 1.0; 2.0 |]) [ a; b ]) 1e-5 |> ignore
        }
        test "karcher (the base is averaged too; max_iter 20, tol 1e-7)" {
            endToEnd "karcher" (fun _ z a b -> perTensor (karcherOracle 20 1e-7) [ z; a; b ]) 1e-5 |> ignore
        }
        test "sce (select_topk 0.5)" {
            endToEnd "sce" (fun _ z a b -> z.Plus(perTensor (sceOracle 0.5) [ a.sub z; b.sub z ])) 1e-5 |> ignore
        }
        test "nearswap (t 0.3)" {
            endToEnd "nearswap" (fun _ z a _ ->
                perTensor (fun xs -> Array.map2 (fun x y -> let w = min 1.0 (max 0.0 (0.3 / max (abs (x - y)) 1e-6)) in w * y + (1.0 - w) * x) xs[0] xs[1]) [ z; a ]) 1e-6
            |> ignore
        }
        test "arcee_fusion" {
            endToEnd "arcee_fusion" (fun _ z a _ -> arceeOracle z a) 1e-6 |> ignore
        }
        test "ties with rescale: true (top-k survivors scaled to the task vector's L1 norm)" {
            let l1 (x: torch.Tensor) (d: float) =
                let kept = magnitude x d
                let before, after = x.abs().sum().item<float>(), kept.abs().sum().item<float>()
                if before < 1e-7 || after < 1e-7 then kept else kept.Times(before / after)
            endToEnd "ties_rescale" (fun _ z a b -> gta z [ l1 (a.sub z) 0.5; l1 (b.sub z) 0.3 ] [ 1.0; 0.5 ] true true 1.0) 1e-5 |> ignore
        }
        test "della_linear and della: mergekit's structure (dim-1 ranks, L1 rescale), equal to the in-process recipe" {
            use dir = new TempDir()
            let path, b, a, m = zooWith dir "della_linear"
            let config = ok (MergekitConfig.load path)
            let recipe = ok (MergekitConfig.toRecipe layers config)
            let text = recipe.Describe()
            Expect.stringContains text "della(0.5, 0.15, norescale, dim1)" "density 0.5, default ε 0.15"
            Expect.stringContains text "della(0.7, 0.2, norescale, dim1)" "per-model ε"
            Expect.stringContains text "rescaleL1" "L1 rescale (rescale defaults to true)"
            Expect.isFalse (text.Contains "electSign") "no sign election"
            let out = dir.File "out"
            let code, _, err = MergeDsl.Tests.CliTests.mergedsl [ "run"; path; "--out"; out; "--quiet" ]
            Expect.equal code 0 $"exit code ({err})"
            let got = MergeDsl.Tests.CliTests.loadAll out
            let ins =
                inputs (Some(model "base" [ for n, _ in shapes -> n, b[n] ]))
                    [ model "model-a" [ for n, _ in shapes -> n, a[n] ]; model "model-b" [ for n, _ in shapes -> n, m[n] ] ]
            let expected = run recipe ins
            for n, _ in shapes do
                let g = got[n]
                Expect.isTrue (MergeDsl.Tests.CliTests.identical g (torch.tensor(expected[n]).reshape(g.shape))) $"{n}"
        }
        test "the new methods parse, import and check their model counts" {
            let cases =
                [ "nuslerp", "models:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: [1, 2]}\nparameters:\n  nuslerp_row_wise: true\n  nuslerp_flatten: false\n"
                  "multislerp", "base_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 2}\nparameters:\n  normalize_weights: false\n  eps: 1.0e-6\n"
                  "karcher", "models:\n  - model: a\n  - model: b\nparameters:\n  max_iter: 5\n  tol: 1.0e-6\n"
                  "sce", "base_model: base\nmodels:\n  - model: a\n  - model: b\nparameters:\n  select_topk: [0.2, 0.8]\n  int8_mask: true\n"
                  "nearswap", "base_model: base\nmodels:\n  - model: a\nparameters:\n  t:\n    - filter: mlp\n      value: 0.001\n    - value: 0.0001\n"
                  "arcee_fusion", "base_model: base\nmodels:\n  - model: base\n  - model: a\n" ]
            for name, body in cases do
                let config = ok (parseIn $"merge_method: {name}\n{body}")
                let recipe = ok (MergekitConfig.toRecipe 4 config)
                Expect.equal recipe.Name name "recipe name"
                let script = ok (MergekitConfig.toFSharp 4 config)
                Expect.stringContains script "let recipe =" $"{name}: import"
            match MergekitConfig.toRecipe 4 (ok (parseIn "merge_method: nearswap\nbase_model: base\nmodels:\n  - model: a\n")) with
            | Ok _ -> failtest "nearswap without t accepted"
            | Error e -> Expect.stringContains e "'t' has no value" "t is required (as mergekit)"
            expectError "merge_method: nearswap\nbase_model: base\nmodels:\n  - model: a\n  - model: b\nparameters:\n  t: 0.1\n" [ "exactly one other model" ]
            expectError "merge_method: nuslerp\nmodels:\n  - model: a\n    parameters: {weight: 1}\n" [ "exactly two models" ]
            expectError "merge_method: sce\nmodels:\n  - model: a\n" [ "needs base_model" ]
            expectError "merge_method: sce\nbase_model: base\nmodels:\n  - model: a\nparameters:\n  select_topk: 2\n" [ ":6:"; "outside [0, 1]" ]
            expectError "merge_method: karcher\nmodels:\n  - model: a\n  - model: b\nparameters:\n  max_iter: 0\n" [ ":6:"; "max_iter" ]
            expectError "merge_method: multislerp\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n" [ ":4:"; "'density'" ]
        }
    ]
