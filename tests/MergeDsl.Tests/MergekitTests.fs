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
    for name, _ in shapes do
        let g = got[name]
        let expected = oracle name (d64 b[name]) (d64 a[name]) (d64 m[name])
        let diff = d64(g).sub(expected.to_type(g.dtype) |> d64).abs().max().item<float>()
        Expect.isLessThanOrEqual diff tolerance $"{fixture}: {name} (max |diff| {diff})"
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
                expectError "merge_method: nuslerp\nmodels:\n  - model: a\n" [ ":1:"; "not supported yet" ]
                expectError "merge_method: ties\nmodels:\n  - model: a\n" [ "needs base_model" ]
                expectError "merge_method: slerp\nbase_model: base\nmodels:\n  - model: a\n  - model: b\nparameters:\n  t: 0.5\n" [ "exactly one other model" ]
                expectError "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n" [ ":4:"; "slices[0].sources[0]: 'layer_range' is missing" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\nembed_slerp: true\n" [ ":5:"; "embed_slerp"; "not supported" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: org/some-model\n" [ ":4:"; "'org/some-model' is not a local model folder" ]
                expectError "merge_method: ties\nbase_model: base\nmodels:\n  - model: a+lora\n" [ "LoRA" ]
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
                    | _ -> Expect.stringContains text "della(0.5, 0.1)" "DELLA with rescale"
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
