module MergeDsl.Tests.WemoeTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open FsCheck
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Tests.ClipTests

/// Base model and N experts = base + noise, as name->tensor maps.
let zoo (cfg: ClipVisionConfig) (seed: int64) (n: int) =
    use m = randomModel cfg seed
    let b = m.StateTensors()
    torch.manual_seed (seed + 1000L) |> ignore
    let experts =
        [ for _ in 1..n ->
            let d = Dictionary<string, torch.Tensor>()
            for KeyValue(k, v) in b do
                d.[k] <- v + torch.randn(v.shape).mul(torch.tensor 0.1f)
            d ]
    b, experts

let sources (b: Dictionary<string, torch.Tensor>) (experts: Dictionary<string, torch.Tensor> list) =
    new InMemorySource("base", b) :> ITensorSource,
    [ for i, e in List.indexed experts -> new InMemorySource($"expert{i}", e) :> ITensorSource ] :> IReadOnlyList<_>

let taModel (cfg: ClipVisionConfig) (b: Dictionary<string, torch.Tensor>) (experts: Dictionary<string, torch.Tensor> list) (lambda: float) =
    let m = new ClipVisionModel(cfg)
    let merged = Dictionary<string, torch.Tensor>()
    for KeyValue(k, v) in b do
        merged.[k] <- TaskVectorOps.TaskArithmetic(v, [| for e in experts -> e.[k] |], lambda)
    m.LoadWeights(merged) |> ignore
    m

let maxDiff (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32> ()

let upscale cfg b experts (spec: UpscaleSpec) =
    let bs, es = sources b experts
    Upscaler.Upscale(cfg, bs, es, spec)

let expertMlp (cfg: ClipVisionConfig) (w: Dictionary<string, torch.Tensor>) (layer: int) (x: torch.Tensor) =
    let p = sprintf "vision_model.encoder.layers.%d.mlp" layer
    let lin (h: torch.Tensor) (n: string) = torch.nn.functional.linear(h, w.[p + "." + n + ".weight"], w.[p + "." + n + ".bias"])
    let act = Activations.Get cfg.HiddenAct
    lin (act.Invoke(lin x "fc1")) "fc2"

[<Tests>]
let tests =
    testList "WEMoE" [
        testProperty "constant routers (depth 0) at λ equal the task-arithmetic(λ) model" <| fun (lambdaSeed: int) (nSeed: PositiveInt) (attn: bool) ->
            use _ = torch.NewDisposeScope()
            let lambda = float (abs lambdaSeed % 200 - 100) / 100.0
            let n = 1 + nSeed.Get % 3
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg (int64 nSeed.Get) n
            let modules = if attn then [| "*.mlp"; "*.self_attn.*_proj" |] else [| "*.mlp" |]
            let spec = UpscaleSpec(RouterDepth = 0, InitLambda = lambda, RestLambda = lambda, Modules = modules)
            let moe = upscale cfg b experts spec
            use ta = taModel cfg b experts lambda
            use _ng = torch.no_grad ()
            let x = torch.randn([| 4L; 3L; 8L; 8L |])
            let d = maxDiff (moe.Model.forward x) (ta.forward x)
            moe.Model.Dispose()
            d < 1e-4f

        test "a one-hot route on expert i computes exactly expert i's MLP (forced and through the router)" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "gelu"
            let b, experts = zoo cfg 5L 3
            let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 0))
            use _m = moe.Model
            use _ng = torch.no_grad ()
            let site = moe.Sites.["vision_model.encoder.layers.1.mlp"] :?> WeightEnsemblingMlp
            let x = torch.randn([| 2L; 5L; 16L |])
            for i in 0..2 do
                let oneHot = torch.nn.functional.one_hot(torch.tensor([| int64 i |]), 3L).``to``(torch.float32)
                site.ForcedRoutes <- oneHot
                Expect.isLessThan (maxDiff (site.forward x) (expertMlp cfg experts.[i] 1 x)) 1e-5f $"forced expert {i}"
                site.ForcedRoutes <- null
                let bias = site.Router.parameters() |> Seq.head
                bias.copy_(oneHot.squeeze(0L)) |> ignore
                Expect.isLessThan (maxDiff (site.forward x) (expertMlp cfg experts.[i] 1 x)) 1e-5f $"router bias one-hot {i}"
            let sharedBase = Dictionary<string, torch.Tensor>(b)
            Expect.isGreaterThan (maxDiff (site.forward x) (expertMlp cfg sharedBase 1 x)) 1e-3f "and differs from the base MLP"
        }

        test "per-sample routing does not depend on batch-mates; batch_reduce does" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 9L 2
            for reduce in [ false; true ] do
                let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 2, BatchReduce = reduce, Seed = 3L))
                use _m = moe.Model
                use _ng = torch.no_grad ()
                for p in moe.RouterParameterNames() do
                    let t = moe.Model.ParametersByName().[p]
                    t.copy_(torch.randn(t.shape)) |> ignore   // make routes input-dependent
                let x = torch.randn([| 1L; 3L; 8L; 8L |])
                let out1 = moe.Model.forward(torch.cat([| x; torch.randn([| 3L; 3L; 8L; 8L |]) |], 0L)).narrow(0L, 0L, 1L)
                let out2 = moe.Model.forward(torch.cat([| torch.randn([| 2L; 3L; 8L; 8L |]).mul(torch.tensor 3.0f); x |], 0L)).narrow(0L, 2L, 1L)
                let alone = moe.Model.forward x
                if reduce then Expect.isGreaterThan (maxDiff out1 out2) 1e-4f "batch_reduce mixes samples"
                else
                    Expect.isLessThan (maxDiff out1 out2) 1e-5f "same output whatever the batch-mates"
                    Expect.isLessThan (maxDiff out1 alone) 1e-5f "same as alone"
        }

        test "save/load round trip gives identical outputs (WEMoE with attention, E-WEMoE shared router, heads)" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 11L 2
            let specs =
                [ UpscaleSpec(Modules = [| "*.mlp"; "*.self_attn.q_proj" |], ExpertNames = [| "a"; "b" |])
                  UpscaleSpec(Kind = MoeKind.EWeMoE, SharedRouter = true, RouterDepth = 1, Routing = RouterSelection.TopKOf 1)
                  UpscaleSpec(Kind = MoeKind.Smile, Rank = 3, GateRank = 2, Modules = [| "*.mlp"; "*.self_attn.v_proj" |]) ]
            for spec in specs do
                let moe = upscale cfg b experts spec
                use _m = moe.Model
                let heads = readOnlyDict [ "a", new ClassificationHead("a", torch.randn([| 3L; 8L |]), 50.0f) ]
                let dir = Path.Combine(Path.GetTempPath(), $"mergedsl-moe-{Guid.NewGuid():N}")
                try
                    MoeModelFolder.Save(dir, moe.Model, moe, heads, ImagePreprocess.Clip)
                    use loaded = MoeModelFolder.Load dir
                    use _ng = torch.no_grad ()
                    let x = torch.randn([| 3L; 3L; 8L; 8L |])
                    Expect.isTrue ((moe.Model.forward x).allclose(loaded.Model.forward x, 0.0, 0.0)) $"{spec.Kind}: identical outputs"
                    Expect.equal loaded.Moe.Spec.Kind spec.Kind "kind"
                    Expect.equal (Set.ofSeq loaded.Moe.Sites.Keys) (Set.ofSeq moe.Sites.Keys) "sites"
                    Expect.equal loaded.Heads.["a"].LogitScale 50.0f "head scale"
                    Expect.isTrue (loaded.Heads.["a"].Weight.allclose(heads.["a"].Weight, 0.0, 0.0)) "head weight"
                    Expect.equal loaded.Preprocess.Mean ImagePreprocess.Clip.Mean "preprocess"
                finally
                    if Directory.Exists dir then Directory.Delete(dir, true)
        }

        test "upscaled tensor names are the documented ones" {
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 12L 2
            let moe = upscale cfg b experts (UpscaleSpec(Modules = [| "*.layers.0.mlp"; "*.layers.1.self_attn.k_proj" |]))
            use _m = moe.Model
            let names = moe.Model.ParametersByName().Keys |> Set.ofSeq
            for n in [ "vision_model.encoder.layers.0.mlp.base.fc1.weight"; "vision_model.encoder.layers.0.mlp.experts.1.fc2.bias"
                       "vision_model.encoder.layers.0.mlp.router.0.weight"; "vision_model.encoder.layers.0.mlp.router.2.bias"
                       "vision_model.encoder.layers.1.self_attn.k_proj.base.weight"; "vision_model.encoder.layers.1.self_attn.k_proj.experts.0.weight"
                       "vision_model.encoder.layers.1.self_attn.k_proj.router.2.weight"; "vision_model.encoder.layers.1.mlp.fc1.weight" ] do
                Expect.isTrue (names.Contains n) n
            Expect.equal (moe.RouterParameterNames().Count) 8 "two routers x (0,2) x (weight, bias)"
            let trainable = moe.Model.parameters() |> Seq.filter (fun p -> p.requires_grad) |> Seq.length
            Expect.isGreaterThan trainable 8 "non-upscaled parameters stay trainable in the module; adaptation picks routers by name"
        }

        test "E-WEMoE keeps round(0.1·n) entries per task-vector tensor and shares one router" {
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 13L 2
            let moe = upscale cfg b experts (UpscaleSpec(Kind = MoeKind.EWeMoE, SharedRouter = true))
            use _m = moe.Model
            let ps = moe.Model.ParametersByName()
            let t = ps.["vision_model.encoder.layers.0.mlp.experts.1.fc1.weight"]
            Expect.equal (t.count_nonzero().item<int64> ()) (int64 (Math.Round(0.1 * 512.0))) "51 of 512 kept"
            let routers = moe.RouterParameterNames()
            Expect.isTrue (routers |> Seq.forall (fun n -> n.StartsWith "shared_router.")) "only the shared router"
            Expect.equal routers.Count 4 "depth 2: 0.weight 0.bias 2.weight 2.bias"
        }

        test "routers are reproducible from the spec's seed (a private generator, safe under parallel callers)" {
            let cfg = tinyConfig "quick_gelu"
            let build seed = MoeModelBuilder.Build(cfg, UpscaleSpec(Seed = seed), 3)
            let a, b, c = build 5L, build 5L, build 6L
            let r (m: MoeModel) = m.Model.ParametersByName().["vision_model.encoder.layers.1.mlp.router.0.weight"]
            Expect.isTrue ((r a).allclose(r b, 0.0, 0.0)) "same seed, same routers"
            Expect.isFalse ((r a).allclose(r c, 0.0, 0.0)) "another seed, other routers"
            for m in [ a; b; c ] do m.Model.Dispose()
        }

        test "a pattern that matches nothing fails naming the patterns" {
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 14L 1
            let e = Expect.throwsT<ArgumentException> (fun () -> upscale cfg b experts (UpscaleSpec(Modules = [| "*.ffn" |])) |> ignore) "no match"
            ()
        }

        test "a missing expert tensor is reported with the expert's label and name" {
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 15L 2
            experts.[1].Remove "vision_model.encoder.layers.1.mlp.fc2.bias" |> ignore
            try
                upscale cfg b experts (UpscaleSpec()) |> ignore
                failtest "should fail"
            with :? ModelWeightsException as e ->
                Expect.stringContains e.Message "expert1" "label"
                Expect.stringContains e.Message "vision_model.encoder.layers.1.mlp.fc2.bias" "name"
        }

        test "router selection: top-k keeps raw weights of the k largest, top-p the smallest set reaching p" {
            use _ = torch.NewDisposeScope()
            let w = torch.tensor([| 0.1f; 0.5f; 0.3f; -0.2f |]).reshape([| 1L; 4L |])
            let k2 = RouterSelection.TopKOf(2).ApplyToWeights(w)
            Expect.sequenceEqual (k2.data<float32>().ToArray()) [| 0.0f; 0.5f; 0.3f; 0.0f |] "top-2"
            let probs = torch.tensor([| 0.1f; 0.5f; 0.3f; 0.1f |]).reshape([| 1L; 4L |])
            let p = RouterSelection.TopPOf(0.7).ApplyToProbabilities(probs)
            let got = p.data<float32>().ToArray()
            Expect.floatClose Accuracy.high (float got.[1]) (0.5 / 0.8) "0.5 renormalised"
            Expect.floatClose Accuracy.high (float got.[2]) (0.3 / 0.8) "0.3 renormalised"
            Expect.equal (got.[0], got.[3]) (0.0f, 0.0f) "rest dropped"
            let p8 = RouterSelection.TopPOf(0.8).ApplyToProbabilities(probs)
            Expect.equal (p8.count_nonzero().item<int64> ()) 2L "mass exactly 0.8 is reached by two"
            Expect.equal (RouterSelection.Parse "top-p:0.9") (RouterSelection.TopPOf 0.9) "parse"
        }

        test "mergedsl_moe config section round-trips and --set settings apply" {
            let settings = Map [ "lambda", "0.4"; "router-depth", "1"; "routing", "top-k:2"; "modules", "*.mlp, *.q_proj" ]
            let spec =
                match MergeDsl.MethodRegistry.resolve "wemoe" settings with
                | Ok { Build = MergeDsl.BuiltUpscaling s } -> fst (MergeDsl.Upscale.toCore s)
                | other -> failtestf "expected an upscaling spec, got %A" other
            Expect.equal spec.RestLambda 0.4 "lambda"
            Expect.sequenceEqual spec.Modules [ "*.mlp"; "*.q_proj" ] "modules"
            let struct (back, n) = UpscaleSpec.FromJson(spec.ToJson 3)
            Expect.equal n 3 "experts"
            Expect.equal (back.RouterDepth, back.RestLambda, back.EffectiveRouting) (1, 0.4, RouterSelection.TopKOf 2) "fields"
            Expect.isError (MergeDsl.MethodRegistry.resolve "wemoe" (Map [ "colour", "red" ])) "unknown key"
        }
    ]
