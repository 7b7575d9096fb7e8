/// WEMoE, E-WEMoE and SMILE on Llama-family decoders: the laws (constant routes = task arithmetic, one expert at
/// weight 1 = that expert), causality of per-token routes, KV-cache generation, folders, text adaptation
/// (routers and AdaMerging, entropy and distillation) and bad input.
module MergeDsl.Tests.DecoderMoeTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe
open MergeDsl.Core.Adaptation
open MergeDsl.Tests.TestSupport

/// Llama, untied, GQA 4/2, hidden 16, MLP 24: every projection has min(in, out) = 16.
let llamaConfig =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64)

/// Llama, tied, with attention and MLP biases (the bias paths of every MoE module).
let biasConfig =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, TieWordEmbeddings = true,
                  QkvBias = true, OutputBias = true, MlpBias = true)

/// Base (seed 1) and experts (seeds 2, 3, …), weights N(0, 0.3²) so that the MLP matters to the logits.
let zoo (cfg: DecoderConfig) (n: int) =
    DecoderModelFolder.Random(cfg, 1L, 0.3), [ for i in 0 .. n - 1 -> DecoderModelFolder.Random(cfg, int64 (i + 2), 0.3) ]

let private ids (xs: int list) = torch.tensor(xs |> List.map int64 |> Array.ofList).reshape(1L, int64 xs.Length)

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32> ()

let private logitsOf (m: DecoderModel) (xs: int list) =
    use _ng = torch.no_grad ()
    m.Forward(ids xs)

/// Router weights redrawn N(0, 1): routes then differ strongly from token to token (at initialisation they are ≈ λ).
let private scrambleRouters (moe: DecoderMoeModel) (seed: int64) =
    use gen = new torch.Generator(uint64 seed)
    use _ng = torch.no_grad ()
    let names = HashSet(moe.RouterParameterNames())
    for struct (name, p) in moe.Model.named_parameters () do
        if names.Contains name then p.normal_(0.0, 1.0, gen) |> ignore

let private kinds =
    [ "WEMoE", UpscaleSpec(Kind = MoeKind.WeMoE, RouterDepth = 2)
      "E-WEMoE (keep 0.5, shared router)", UpscaleSpec(Kind = MoeKind.EWeMoE, KeepFraction = Nullable 0.5, SharedRouter = true)
      "SMILE (rank 4, top-1)", UpscaleSpec(Kind = MoeKind.Smile, Rank = 4, GateRank = 2) ]

let private build (cfg: DecoderConfig) (spec: UpscaleSpec) (n: int) =
    let b, experts = zoo cfg n
    try DecoderUpscaler.Upscale(b, ResizeArray experts, spec)
    finally
        b.Dispose()
        for e in experts do e.Dispose()

/// Two tasks with clearly different token distributions (ids 0..11 against 20..39), 400 tokens each.
let textTasks () =
    let g = Random 7
    [ TextTaskData("low", [| for _ in 1 .. 400 -> g.Next(0, 12) |], 400L, "low")
      TextTaskData("high", [| for _ in 1 .. 400 -> g.Next(20, 40) |], 400L, "high") ]

[<Tests>]
let tests =
    testList "decoder MoE" [
        test "WEMoE whose routers output the constant λ is the task-arithmetic(λ) decoder" {
            let b, experts = zoo llamaConfig 3
            use b = b
            let spec = UpscaleSpec(Kind = MoeKind.WeMoE, RouterDepth = 0, InitLambda = 0.3, RestLambda = 0.3)
            let moe = DecoderUpscaler.Upscale(b, ResizeArray experts, spec)
            use m = moe.Model
            Expect.equal moe.Sites.Count 2 "both layers' MLPs"
            let bw = b.StateTensors()
            let ew = experts |> List.map (fun e -> e.StateTensors())
            use ta = new DecoderModel(llamaConfig)
            let merged = Dictionary<string, torch.Tensor>()
            for KeyValue(name, t) in bw do merged[name] <- TaskVectorOps.TaskArithmetic(t, ResizeArray [ for w in ew -> w[name] ], 0.3)
            ta.LoadWeights(merged) |> ignore
            let xs = [ 1; 5; 9; 2; 33; 7; 7; 0; 12 ]
            let expected = logitsOf ta xs
            Expect.isGreaterThan (expected.abs().max().item<float32> ()) 0.5f "logits are not trivially small"
            Expect.isLessThan (maxAbs (logitsOf m xs) expected) 1e-4f "same logits"
            for e in experts do e.Dispose()
        }

        for cfgName, cfg in [ "no biases", llamaConfig; "mlp_bias, tied", biasConfig ] do
            for kind in [ MoeKind.WeMoE; MoeKind.Smile ] do
                test $"one expert at weight 1 is that expert ({UpscaleSpec.KindName kind}, {cfgName})" {
                    let b, experts = zoo cfg 1
                    use b = b
                    use e = experts.Head
                    // WEMoE: constant route 1; SMILE: full rank (16), the one expert always has probability 1.
                    let spec = UpscaleSpec(Kind = kind, RouterDepth = 0, InitLambda = 1.0, RestLambda = 1.0, Rank = 16, GateRank = 2)
                    let moe = DecoderUpscaler.Upscale(b, ResizeArray [ e ], spec)
                    use m = moe.Model
                    let xs = [ 3; 17; 8; 8; 30; 1 ]
                    let expected = logitsOf e xs
                    Expect.isGreaterThan (maxAbs (logitsOf b xs) expected) 0.1f "the base differs from the expert"
                    Expect.isLessThan (maxAbs (logitsOf m xs) expected) 1e-4f "the expert's logits"
                }

        for name, spec in kinds do
            test $"a change to token t+1 never changes the logits at positions <= t ({name})" {
                let moe = build llamaConfig spec 3
                use m = moe.Model
                if spec.Kind <> MoeKind.Smile then scrambleRouters moe 5L
                let a = [ 4; 11; 2; 29; 17; 3; 3; 8; 21; 5 ]
                for t in 0 .. a.Length - 2 do
                    let b = a |> List.mapi (fun i x -> if i = t + 1 then (x + 13) % 40 else x)
                    let la, lb = logitsOf m a, logitsOf m b
                    let upTo = int64 (t + 1)
                    Expect.isLessThan (maxAbs (la.narrow(1, 0L, upTo)) (lb.narrow(1, 0L, upTo))) 1e-5f $"positions 0..{t} unchanged"
                    Expect.isGreaterThan (maxAbs (la.narrow(1, upTo, 1L)) (lb.narrow(1, upTo, 1L))) 1e-3f $"position {t + 1} changed (the test can see a change)"
            }

        test "control: a per-sequence mean of the token routes would leak token t+1 into position t" {
            let moe = build llamaConfig (UpscaleSpec(Kind = MoeKind.WeMoE)) 3
            use m = moe.Model
            scrambleRouters moe 5L
            let a = [ 4; 11; 2; 29; 17; 3; 3; 8 ]
            let b = a |> List.mapi (fun i x -> if i = 5 then 39 else x)
            let meanRouted xs =
                moe.ForceRoutes null
                logitsOf m xs |> ignore
                use r = (Seq.head moe.RoutedModules).LastRoutes.mean([| 1L |])   // [1, N]: the sample's mean route
                moe.ForceRoutes r
                let l = logitsOf m xs
                moe.ForceRoutes null
                l
            let la, lb = meanRouted a, meanRouted b
            Expect.isGreaterThan (maxAbs (la.narrow(1, 0L, 5L)) (lb.narrow(1, 0L, 5L))) 1e-4f "earlier positions see the later token"
        }

        for name, spec in kinds do
            test $"KV-cache generation gives the tokens and logits of full recomputation ({name})" {
                let moe = build llamaConfig spec 2
                use m = moe.Model
                if spec.Kind <> MoeKind.Smile then scrambleRouters moe 9L
                for temp, topk in [ 0.0, 0; 1.0, 5 ] do
                    let run cache =
                        DecoderGeneration.Generate(m, [| 3; 17; 8 |], GenerationOptions(MaxNewTokens = 12, UseCache = cache, KeepLogits = true,
                                                                                         Temperature = temp, TopK = topk, Seed = 42L))
                    let a, b = run true, run false
                    Expect.sequenceEqual a.Tokens b.Tokens $"tokens (temperature {temp})"
                    for s in 0 .. a.StepLogits.Count - 1 do
                        let err = Array.map2 (fun (x: float32) y -> abs (x - y)) a.StepLogits[s] b.StepLogits[s] |> Array.max
                        Expect.isLessThan err 1e-4f $"step {s} logits"
            }

        test "SMILE selects single projections; WEMoE whole MLPs; names are the MoE's" {
            let smile = build llamaConfig (UpscaleSpec(Kind = MoeKind.Smile, Modules = [| "*.layers.1.mlp.down_proj" |], Rank = 4)) 2
            use m = smile.Model
            Expect.sequenceEqual smile.Sites.Keys [ "model.layers.1.mlp.down_proj" ] "one projection"
            let names = m.ParametersByName().Keys |> Set.ofSeq
            Expect.isTrue (names.Contains "model.layers.1.mlp.down_proj.experts.1.u") "SMILE expert"
            Expect.isTrue (names.Contains "model.layers.1.mlp.gate_proj.weight") "plain sibling"
            Expect.isTrue (names.Contains "model.layers.0.mlp.down_proj.weight") "other layer plain"
            let we = build llamaConfig (UpscaleSpec(Kind = MoeKind.WeMoE, Modules = [| "model.layers.0.mlp" |])) 2
            use w = we.Model
            let wn = w.ParametersByName().Keys |> Set.ofSeq
            for n in [ "model.layers.0.mlp.base.gate_proj.weight"; "model.layers.0.mlp.experts.1.down_proj.weight"
                       "model.layers.0.mlp.router.2.bias"; "model.layers.1.mlp.up_proj.weight" ] do
                Expect.isTrue (wn.Contains n) n
            Expect.equal (we.RouterParameterNames().Count) 4 "router.0/2 weight and bias"
        }

        test "upscale folders: the output is a decoder folder that loads, scores and keeps the base's tokenizer" {
            let dir = Directory.CreateTempSubdirectory("mergedsl-dmoe-").FullName
            try
                let b, experts = zoo llamaConfig 2
                let save name (m: DecoderModel) =
                    let d = Path.Combine(dir, name)
                    DecoderModelFolder.Save(d, m, DecoderModelFolder.ByteTokenizerFiles())
                    m.Dispose()
                    d
                let baseDir = save "base" b
                let expertDirs = experts |> List.mapi (fun i e -> save $"e{i}" e)
                let spec = UpscaleSpec(Kind = MoeKind.WeMoE)
                let out = Path.Combine(dir, "moe")
                let summary = UpscaleJob.Run(baseDir, ResizeArray expertDirs, out, spec)
                Expect.sequenceEqual summary.Sites [ "model.layers.0.mlp"; "model.layers.1.mlp" ] "sites"
                Expect.isTrue (File.Exists(Path.Combine(out, "tokenizer.json"))) "tokenizer copied"
                let cfgText = File.ReadAllText(Path.Combine(out, "config.json"))
                Expect.stringContains cfgText "\"model_type\": \"mergedsl_decoder_moe\"" "own model_type"
                Expect.stringContains cfgText "\"decoder_architecture\": \"LlamaForCausalLM\"" "base architecture kept"
                Expect.stringContains cfgText "\"expert_names\"" "spec"
                use loaded = DecoderModelFolder.Load out
                let b2, ex2 = zoo llamaConfig 2
                let inMemory = DecoderUpscaler.Upscale(b2, ResizeArray ex2, spec)
                use im = inMemory.Model
                b2.Dispose()
                for e in ex2 do e.Dispose()
                let xs = [ 1; 2; 3; 39; 0; 12 ]
                Expect.isLessThan (maxAbs (logitsOf loaded xs) (logitsOf im xs)) 1e-5f "folder = in memory"
                let s = DecoderScoring.Score(loaded, ResizeArray [ [| 1; 2; 3; 39 |] :> IReadOnlyList<int> ])[0]
                Expect.equal s.Tokens 3 "three predictions"
                Expect.isTrue (Double.IsFinite s.SumLogLikelihood) "finite score"
            finally
                Directory.Delete(dir, true)
        }

        test "entropy adaptation of decoder routers lowers next-token entropy on held windows" {
            let moe = build llamaConfig (UpscaleSpec(Kind = MoeKind.WeMoE)) 2
            use m = moe.Model
            let data = textTasks ()
            let held = TokenWindows.Fixed(data, 8, 16, 99L)
            let before = DecoderLm.Objective(m, held, AdaptObjective.Entropy)
            let r = DecoderRouterAdaptation.Run(moe, data, 16, AdaptOptions(Steps = 30, BatchPerTask = 4, LearningRate = Nullable 1e-2, Seed = 1L))
            let after = DecoderLm.Objective(m, held, AdaptObjective.Entropy)
            Expect.equal r.Log.Count 30 "30 steps"
            Expect.equal r.TrainedParameters.Count 8 "2 layers × router.{0,2}.{weight,bias}"
            Expect.isLessThan after (before - 0.05) $"entropy {before:F4} -> {after:F4} (nats, summed over 2 tasks)"
        }

        test "distillation adaptation of decoder routers moves each task towards its expert (KL on held windows)" {
            let spec = UpscaleSpec(Kind = MoeKind.WeMoE)
            let moe = build llamaConfig spec 2
            use m = moe.Model
            let data = textTasks ()
            let held = TokenWindows.Fixed(data, 8, 16, 99L)
            use teachers = new DecoderExpertTeachers(ResizeArray [ for i in 0 .. 1 -> DecoderModelFolder.Random(llamaConfig, int64 (i + 2), 0.3) ])
            let kl () = DecoderLm.Objective(m, held, AdaptObjective.Distillation, teachers.AsFunction())
            let before = kl ()
            DecoderRouterAdaptation.Run(moe, data, 16,
                                        AdaptOptions(Steps = 40, BatchPerTask = 4, LearningRate = Nullable 3e-2, Seed = 1L,
                                                     Objective = AdaptObjective.Distillation),
                                        teacher = teachers.AsFunction()) |> ignore
            let after = kl ()
            Expect.isLessThan after (before * 0.95) $"KL {before:F4} -> {after:F4}"
        }

        test "layer-wise AdaMerging on a decoder lowers next-token entropy; 0 steps is task arithmetic 0.3" {
            let b, experts = zoo llamaConfig 2
            use b = b
            let bw = b.StateTensors()
            let ew = experts |> List.map (fun e -> e.StateTensors())
            use bs = new InMemorySource("base", bw)
            let es = ResizeArray [ for i, w in List.indexed ew -> new InMemorySource($"e{i}", w) :> ITensorSource ]
            let data = textTasks ()
            let held = TokenWindows.Fixed(data, 8, 16, 99L)
            let run steps = DecoderAdaMerging.Run(llamaConfig, bs, es, data, 16, AdaptOptions(Steps = steps, BatchPerTask = 4, LearningRate = Nullable 1e-2, Seed = 1L))
            let r0 = run 0
            use m0 = r0.Model
            use ta = new DecoderModel(llamaConfig)
            let merged = Dictionary<string, torch.Tensor>()
            for KeyValue(name, t) in bw do merged[name] <- TaskVectorOps.TaskArithmetic(t, ResizeArray [ for w in ew -> w[name] ], 0.3)
            ta.LoadWeights(merged) |> ignore
            Expect.isLessThan (maxAbs (logitsOf m0 [ 1; 2; 3 ]) (logitsOf ta [ 1; 2; 3 ])) 1e-4f "λ = 0.3 everywhere"
            let r = run 30
            use m = r.Model
            Expect.sequenceEqual r.Lambdas.shape [| int64 r.ParameterOrder.Count; 2L |] "one λ per parameter tensor and task"
            let before, after = DecoderLm.Objective(m0, held, AdaptObjective.Entropy), DecoderLm.Objective(m, held, AdaptObjective.Entropy)
            Expect.isLessThan after (before - 0.05) $"entropy {before:F4} -> {after:F4}"
            for e in experts do e.Dispose()
        }

        test "bad input: patterns that select no decoder MLP, batch-reduce, mis-shaped expert tensors, unknown architectures" {
            throwsWith<ArgumentException> (fun () -> build llamaConfig (UpscaleSpec(Modules = [| "*.mlp"; "*.self_attn.q_proj" |])) 2 |> ignore)
                "pattern '*.self_attn.q_proj' matches no upscalable decoder module" "attention pattern"
            throwsWith<ArgumentException> (fun () -> build llamaConfig (UpscaleSpec(Modules = [| "*.mlp.down_proj" |])) 2 |> ignore)
                "WEMoE: model.layers.N.mlp" "WEMoE takes whole MLPs"
            throwsWith<ArgumentException> (fun () -> build llamaConfig (UpscaleSpec(BatchReduce = true)) 2 |> ignore) "batch-reduce" "batch-reduce"
            let b, experts = zoo llamaConfig 1
            use b = b
            let w = experts.Head.StateTensors()
            experts.Head.Dispose()
            w["model.layers.1.mlp.up_proj.weight"] <- torch.zeros(20L, 16L)
            use bs = new InMemorySource("base", b.StateTensors())
            use es = new InMemorySource("expert0", w)
            throwsWith<ModelWeightsException> (fun () -> DecoderUpscaler.Upscale(llamaConfig, bs, ResizeArray [ es :> ITensorSource ], UpscaleSpec()) |> ignore)
                "model.layers.1.mlp.up_proj.weight [20,16] (model expects [24,16])" "names the tensor and both shapes"
            let dir = Directory.CreateTempSubdirectory("mergedsl-dmoe-bad-").FullName
            try
                File.WriteAllText(Path.Combine(dir, "config.json"), """{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}""")
                Expect.isTrue (DecoderMoeFolder.IsLanguageModel dir) "a language model, not CLIP"
                throwsWith<FormatException> (fun () -> UpscaleJob.Run(dir, ResizeArray [ dir ], Path.Combine(dir, "..", Path.GetFileName dir + "-out"), UpscaleSpec()) |> ignore)
                    "architectures [GPT2LMHeadModel] is not a supported decoder" "unknown architecture"
            finally
                Directory.Delete(dir, true)
        }
    ]
