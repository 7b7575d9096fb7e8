/// The compiler: sharing, header-only errors, and the cross-check against the reference interpreter.
module MergeDsl.Tests.CompilerTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Tests.AlgebraSupport

let private w3 = vec [ 1.0; 2.0; 3.0 ]

/// A source that fails on any data access: proves errors come from headers only.
type private NoDataSource(inner: MergeDsl.Core.Checkpoints.ITensorSource) =
    interface MergeDsl.Core.Checkpoints.ITensorSource with
        member _.Label = inner.Label
        member _.Tensors = inner.Tensors
        member _.Metadata = inner.Metadata
        member _.TryGetInfo(name, info) = inner.TryGetInfo(name, &info)
        member _.Load name = failwithf "data of '%s' read during compilation" name
        member _.Dispose() = ()

let private headersOnly (m: NamedSource) = NamedSource(m.Label, new NoDataSource(m.Source))

let private compileOnly recipe (b: NamedSource option) (es: NamedSource list) =
    Compiler.Compile(recipe, inputs (Option.map headersOnly b) (List.map headersOnly es)) |> ignore

// ---- random recipes ----

let private nExperts = 3

let private genSparsifier allowGlobal =
    Gen.frequency [
        2, Gen.elements [ 0.3; 0.5; 1.0 ] |> Gen.map (fun d -> TopK(d) :> Sparsifier)
        (if allowGlobal then 6 else 0), Gen.elements [ 0.25; 0.6; 0.9 ] |> Gen.map (fun d -> TopK(d, TopKScope.Global) :> Sparsifier)
        1, Gen.elements [ 0.5; 1.0 ] |> Gen.map (fun d -> Bernoulli(d) :> Sparsifier)
        1, Gen.constant (Bernoulli(0.6, DareRescale.L1) :> Sparsifier)
        1, Gen.constant (Breadcrumbs(0.5, 0.2) :> Sparsifier)
        1, Gen.constant (Della(0.5, 0.2) :> Sparsifier) ]

let rec private stackSize (e: Expr) =
    match e with
    | :? Experts -> nExperts
    | :? StackOf as s -> s.Items |> Seq.sumBy (fun i -> if i.Kind = ValueKind.Tensor then 1 else stackSize i)
    | _ -> stackSize (e.Children |> Seq.find (fun c -> c.Kind = ValueKind.Stack))

let rec private containsGlobal (e: Expr) =
    match e with
    | :? Sparsify as s when (match s.Method with :? TopK as t -> t.Scope = TopKScope.Global | _ -> false) -> true
    | _ -> e.Children |> Seq.exists containsGlobal

/// Global top-k may not nest (the reference interpreter does not do nested statistics).
let rec private genStack (d: int) : Gen<Expr> =
    let leaves = [ Gen.constant (Experts() :> Expr); Gen.constant (StackOf([| BaseModel() :> Expr; Experts() |]) :> Expr) ]
    if d <= 0 then Gen.oneof leaves
    else
        Gen.oneof (
            leaves
            @ [ genStack (d - 1) |> Gen.map (fun s -> TaskVectors(s, BaseModel()) :> Expr)
                gen {
                    let! s = genStack (d - 1)
                    let! sp = genSparsifier (not (containsGlobal s))
                    return Sparsify(s, sp) :> Expr }
                gen {
                    let! s = genStack (d - 1)
                    let! r = Gen.elements [ SignRule.Mass; SignRule.Count ]
                    return ElectSign(s, r) :> Expr }
                gen {
                    let! s = genStack (d - 1)
                    let! f = Gen.elements [ 0.5; 1.0; -2.0 ]
                    return Scale(s, ConstantFactor f) :> Expr }
                gen {
                    let! s = genStack (d - 1)
                    let! t = genTensor (d - 1)
                    return Add(s, t) :> Expr } ])

and private genTensor (d: int) : Gen<Expr> =
    let leaves =
        [ Gen.constant (BaseModel() :> Expr); Gen.constant (ModelTensor "e2" :> Expr)
          Gen.elements [ 0; 2 ] |> Gen.map (fun i -> Pick(Experts(), i) :> Expr) ]
    if d <= 0 then Gen.oneof leaves
    else
        Gen.oneof (
            leaves
            @ [ gen {
                    let! s = genStack (d - 1)
                    let! op = Gen.elements [ Reduction.Sum; Reduction.Mean; Reduction.DisjointMean ]
                    return Reduce(s, op) :> Expr }
                gen {
                    let! s = genStack (d - 1)
                    let! ws = Gen.listOfLength (stackSize s) (Gen.elements [ 0.5; -1.0; 2.0 ])
                    return Weighted(s, Array.ofList ws) :> Expr }
                Gen.map2 (fun a b -> Add(a, b) :> Expr) (genTensor (d - 1)) (genTensor (d - 1))
                gen {
                    let! x = genTensor (d - 1)
                    let! f = Gen.elements [ 0.3; 1.0; -1.5 ]
                    let! kind = Gen.elements [ 0; 1; 2 ]
                    let factor : ScaleFactor =
                        match kind with
                        | 0 -> ConstantFactor f
                        | 1 -> LayerGradient([| 0.0; f; 1.0 |])
                        | _ -> ByNameFactor([| NamedFactor(NamePattern.Parse "*.b", ConstantFactor 2.0) |], ConstantFactor f)
                    return Scale(x, factor) :> Expr }
                genTensor (d - 1) |> Gen.map (fun x -> Passthrough x :> Expr)
                gen {
                    let! a = genTensor (d - 1)
                    let! b = genTensor (d - 1)
                    let! t = Gen.elements [ 0.0; 0.3; 1.0 ]
                    let! spherical = Gen.elements [ true; false ]
                    let pair = StackOf([| a; b |])
                    return (if spherical then Slerp(pair, t) :> Expr else Lerp(pair, t) :> Expr) }
                genStack (d - 1) |> Gen.map (fun s -> ModelStock(s, BaseModel()) :> Expr)
                gen {
                    let! x = genTensor (d - 1)
                    let! sp = genSparsifier (not (containsGlobal x))
                    return Sparsify(x, sp) :> Expr } ])

/// The TIES skeleton with a random sparsifier, so whole-model statistics are exercised often.
let private genTiesLike =
    gen {
        let! sp = genSparsifier true
        let! rule = Gen.elements [ SignRule.Mass; SignRule.Count ]
        return Add(BaseModel(), Reduce(ElectSign(Sparsify(TaskVectors(Experts(), BaseModel()), sp), rule), Reduction.DisjointMean)) :> Expr
    }

let private genRecipe =
    gen {
        let! rule = Gen.frequency [ 3, genTensor 3; 1, genTiesLike; 1, Gen.elements [ Passthrough(BaseModel()) :> Expr; Passthrough(ModelTensor "e3"); Passthrough(Pick(Experts(), 1)) ] ]
        let! fallback = Gen.frequency [ 3, genTensor 3; 1, genTiesLike ]
        let! pattern = Gen.elements [ "layers.0.*"; "re:.*\\.b$"; "emb" ]
        return MergeRecipe([| RecipeRule(NamePattern.Parse pattern, rule) |], fallback)
    }

type private RecipeArb =
    static member Recipe() = Arb.fromGenShrink (genRecipe, fun _ -> Seq.empty)

/// A sliced model's recipe (frankenmerges, per-slice merges): 2–4 output layers over inputs of 3, each output layer's
/// rule reading source layers through shiftLayers (the whole expression, or each operand of an add shifted apart).
/// Global top-k stays out: its budget over shifted reads is not what the reference interpreter sorts.
let private genSlicedRecipe =
    let local = genTensor 2 |> Gen.filter (containsGlobal >> not)
    let shifted (j: int) = gen {
        let! m = Gen.choose (0, 2)
        let! x = local
        return (if m = j then x else ShiftLayers(x, m - j) :> Expr) }
    gen {
        let! n = Gen.choose (2, 4)
        let! rules =
            Gen.sequenceToList [
                for j in 0 .. n - 1 ->
                    gen {
                        let! two = Gen.elements [ false; true ]
                        let! a = shifted j
                        let! b = shifted j
                        return RecipeRule(NamePattern.Parse $"re:layers\\.{j}\\..*", (if two then Add(a, b) :> Expr else a)) } ]
        let! fallback = local
        return MergeRecipe(Array.ofList rules, fallback).WithOutputLayers(Nullable n)
    }

type private SlicedRecipeArb =
    static member Recipe() = Arb.fromGenShrink (genSlicedRecipe, fun _ -> Seq.empty)

/// Three layers of equal shapes, so any layer can be read for any other.
let private slicedWorld (seed: int) =
    let rng = Random seed
    let shapes = [ yield "emb", [ 3L ]; for i in 0 .. 2 do yield $"layers.{i}.w", [ 2L; 3L ]; yield $"layers.{i}.b", [ 4L ]; yield "norm", [ 2L ] ]
    let mk label = model label [ for (n, s) in shapes -> n, tensor s [ for _ in 1 .. int (List.reduce (*) s) -> float32 (rng.Next(-40, 41)) / 8.0f ] ]
    mk "base", [ mk "e1"; mk "e2"; mk "e3" ]

let private crossCheckSliced (recipe: MergeRecipe) (seed: int) =
    let b, es = slicedWorld seed
    let ins = inputs (Some b) es
    let opts = MergeOptions(Seed = int64 seed, AllowNonFinite = true, MaxPrefetchBytes = 64L)
    let plan = Compiler.Compile(recipe, ins)
    use sink = new MemorySink()
    Executor.Run(plan, sink, opts) |> ignore
    let compiled = sink.Tensors |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq
    let expected = reference opts recipe ins
    let same = expected |> Map.forall (fun k v -> compiled.ContainsKey k && sameBits v compiled[k])
    if not same then printfn "recipe: %s\nexpected %A\ncompiled %A" (recipe.Describe()) expected compiled
    same && compiled.Count = expected.Count && compiled.ContainsKey $"layers.{recipe.OutputLayers.Value - 1}.w"

/// Base + 3 experts: a 2-D and a 1-D tensor per layer, an embedding, and an int tensor (copied).
let private randomWorld (seed: int) =
    let rng = Random seed
    let shapes = [ "emb", [ 3L ]; "layers.0.w", [ 2L; 3L ]; "layers.1.w", [ 2L; 2L ]; "layers.1.b", [ 4L ] ]
    let mk label =
        model label (
            [ for (n, s) in shapes -> n, tensor s [ for _ in 1 .. int (List.reduce (*) s) -> float32 (rng.Next(-40, 41)) / 8.0f ] ]
            @ [ "position_ids", torch.tensor([| 0L; 1L; 2L |]) ])
    mk "base", [ mk "e1"; mk "e2"; mk "e3" ]

let private counting (m: NamedSource) = NamedSource(m.Label, new CountingSource(m.Source))

let private crossCheck (recipe: MergeRecipe) (seed: int) =
    let b, es = randomWorld seed
    let b, es = counting b, List.map counting es
    let ins = inputs (Some b) es
    let opts = MergeOptions(Seed = int64 seed, AllowNonFinite = true, MaxPrefetchBytes = 64L)
    let plan = Compiler.Compile(recipe, ins)
    use sink = new MemorySink()
    Executor.Run(plan, sink, opts) |> ignore
    let compiled = sink.Tensors |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq
    // Loads: every (model, tensor) once per pass that needs it; no tensor read twice in the merge pass.
    // statistics: two passes per global group the tensor belongs to
    let groupsOf name =
        plan.Groups |> Seq.filter (fun g -> g.Members |> Seq.exists (fun struct (t, _) -> plan.Tensors[t].Name = name)) |> Seq.length
    let loadsOk =
        plan.Models
        |> Seq.forall (fun m ->
            let c = m.Source :?> CountingSource
            plan.Tensors |> Seq.forall (fun t ->
                let planned = t.Loads |> Seq.filter (fun n -> plan.Models[n.Model].Label = m.Label) |> Seq.length
                let actual = match c.Loads.TryGetValue t.Name with | true, n -> n | _ -> 0
                planned <= 1 && (let g = groupsOf t.Name in if g > 0 then actual <= (1 + 2 * g) * planned else actual = planned)))
    let expected = reference opts recipe ins
    let same = expected |> Map.forall (fun k v -> sameBits v compiled[k])
    if not same || not loadsOk then
        printfn "recipe: %s\nloads ok: %b\nexpected %A\ncompiled %A" (recipe.Describe()) loadsOk expected compiled
    same && loadsOk && compiled.Count = expected.Count

[<Tests>]
let tests =
    testList "Compiler" [
        test "common subexpressions are shared: each input loaded once, each task vector computed once" {
            let ins = inputs (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ]; model "e2" [ "w", w3 ] ]
            // TIES uses the task vectors twice over (trim, then elect), and the base twice (τ and the final add)
            let tv = Recipe.experts |> Recipe.taskVectors
            let r = Recipe.ofTensor (Recipe.add (tv |> Recipe.sum) (tv |> Recipe.mean) |> Recipe.addToBase)
            let plan = Compiler.Compile(r, ins)
            let t = plan.Tensors[0]
            Expect.equal (t.Loads |> Seq.length) 3 "3 loads"
            Expect.equal (t.Nodes |> Seq.filter (fun n -> n.Op = OpKind.Sub) |> Seq.length) 2 "2 task vectors"
            Expect.equal (t.Nodes |> Seq.filter (fun n -> n.Op = OpKind.Cast) |> Seq.length) 3 "3 casts"
        }

        test "plans describe phases, bytes and the global statistics group" {
            let ins = inputs (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ]
            let plan = Compiler.Compile(Methods.ties 0.5 1.0 Global MergeMean, ins)
            let d = plan.Describe()
            Expect.stringContains d "phases: statistics" "phases"
            Expect.stringContains d "bytes read: 24 B" "bytes"
            Expect.equal plan.Groups.Count 1 "one group"
            Expect.equal plan.StatisticsBytesRead 48L "two statistics passes"
        }

        test "shape mismatch between models names the parameter and both models" {
            expectRecipeError [ "w: shape [2] in expert 'e1' differs from [3] in base 'base'" ] (fun () ->
                compileOnly (Methods.taskArithmetic 0.3) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", vec [ 1.0; 2.0 ] ] ])
            |> ignore
        }

        test "a tensor missing from an expert names the parameter and the expert" {
            expectRecipeError [ "v: missing from expert 'e1'" ] (fun () ->
                compileOnly (Methods.taskArithmetic 0.3) (Some(model "base" [ "w", w3; "v", w3 ])) [ model "e1" [ "w", w3 ] ])
            |> ignore
        }

        test "non-float tensors are copied from the base by default, and are an error in an expert" {
            let ids = torch.tensor([| 0L; 1L; 2L |])
            let ins = inputs (Some(model "base" [ "w", w3; "ids", ids ])) [ model "e1" [ "w", w3; "ids", ids ] ]
            let plan = Compiler.Compile(Methods.taskArithmetic 0.3, ins)
            let t = plan.Tensors |> Seq.find (fun t -> t.Name = "ids")
            Expect.isTrue t.IsCopy "copied"
            Expect.equal t.OutputDType MergeDsl.Core.Checkpoints.DType.I64 "keeps I64"
            expectRecipeError [ "ids: dtype I64"; "cannot be merged" ] (fun () ->
                Compiler.Compile(Methods.taskArithmetic 0.3, ins, CompileOptions(CopyNonFloat = false)) |> ignore)
            |> ignore
            expectRecipeError [ "w: dtype I64 in expert 'e1' cannot be merged" ] (fun () ->
                compileOnly (Methods.taskArithmetic 0.3) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", ids ] ])
            |> ignore
        }

        test "density outside (0, 1] names the parameter and the value" {
            for d in [ 0.0; 1.5; -0.1 ] do
                expectRecipeError [ "w: topK("; "is outside (0, 1]" ] (fun () ->
                    compileOnly (Methods.ties d 1.0 PerTensor MergeMean) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ])
                |> ignore
            expectRecipeError [ "w: bernoulli(2): density 2 is outside (0, 1]" ] (fun () ->
                compileOnly (Methods.dareLinear 2.0 1.0 Inverse) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "w: della"; "epsilon" ] (fun () ->
                compileOnly (Methods.della 0.9 0.2 1.0 MergeMean) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ])
            |> ignore
        }

        test "slerp and lerp with the wrong number of models" {
            expectRecipeError [ "w: slerp needs exactly 2 models, got 3 (base + 2 experts)" ] (fun () ->
                compileOnly (Methods.slerp 0.5) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ]; model "e2" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "w: lerp needs exactly 2 models, got 3" ] (fun () ->
                compileOnly (Recipe.ofTensor (Recipe.experts |> Recipe.lerp 0.5)) None [ model "e1" [ "w", w3 ]; model "e2" [ "w", w3 ]; model "e3" [ "w", w3 ] ])
            |> ignore
        }

        test "unknown parameters, models and experts are reported before reading" {
            expectRecipeError [ "lm_head.weight: unknown parameter" ] (fun () ->
                compileOnly (Recipe.select [ Recipe.rule "lm_head.weight" Recipe.baseModel ] Recipe.baseModel) (Some(model "base" [ "w", w3 ])) [])
            |> ignore
            expectRecipeError [ "w: model 'e9' is not among the inputs" ] (fun () ->
                compileOnly (Recipe.ofTensor (Recipe.model "e9")) (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "expert 'e9' selected by the recipe" ] (fun () ->
                compileOnly (Methods.average |> Recipe.onExperts [ "e9" ]) None [ model "e1" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "w: the recipe uses the base model, but no base was given" ] (fun () ->
                compileOnly (Methods.taskArithmetic 0.3) None [ model "e1" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "w: weighted: 3 weights for a stack of 2 models" ] (fun () ->
                compileOnly (Recipe.ofTensor (Recipe.experts |> Recipe.weighted [ 1.0; 1.0; 1.0 ])) None [ model "e1" [ "w", w3 ]; model "e2" [ "w", w3 ] ])
            |> ignore
            expectRecipeError [ "w: modelStock needs at least 2 experts, got 1" ] (fun () ->
                compileOnly Methods.modelStock (Some(model "base" [ "w", w3 ])) [ model "e1" [ "w", w3 ] ])
            |> ignore
        }

        test "rules: first match wins, the fallback catches the rest, models can be selected" {
            let ins = inputs (Some(model "base" [ "a.mlp.w", vec [ 1.0 ]; "a.norm", vec [ 2.0 ] ])) [ model "e1" [ "a.mlp.w", vec [ 3.0 ]; "a.norm", vec [ 4.0 ] ]; model "e2" [ "a.mlp.w", vec [ 5.0 ]; "a.norm", vec [ 8.0 ] ] ]
            let r =
                Recipe.select [ Recipe.rule "*.mlp.*" (Recipe.experts |> Recipe.mean); Recipe.rule "re:.*" (Recipe.model "e2") ] Recipe.baseModel
            let out = run r ins
            Expect.equal out["a.mlp.w"] [| 4.0f |] "mlp rule"
            Expect.equal out["a.norm"] [| 8.0f |] "second rule"
            let out = run (Methods.average |> Recipe.onExperts [ "e2" ]) ins
            Expect.equal out["a.norm"] [| 8.0f |] "only e2 takes part"
        }

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 60; arbitrary = [ typeof<RecipeArb> ] }
            "random recipes: compiled + streamed execution equals the reference interpreter, each input loaded once"
            (fun (recipe: MergeRecipe) (seed: int) -> crossCheck recipe seed)

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40; arbitrary = [ typeof<SlicedRecipeArb> ] }
            "random sliced recipes (withLayers, shiftLayers): compiled + streamed execution equals the reference interpreter"
            (fun (recipe: MergeRecipe) (seed: int) -> crossCheckSliced recipe seed)
    ]
