module MergeDsl.Tests.TaskPoolTests

open System
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Core.Data
open MergeDsl.Core.TaskPool

let private cfg = TinyClipConfig(Hidden = 16, Layers = 2, Heads = 2, Intermediate = 32, ProjectionDim = 8)

let private model seed =
    TinyClip.Init(cfg, new torch.Generator(uint64 seed))

/// An expert: the base with its MLPs perturbed (what MLP-only fine-tuning produces).
let private expert (pre: Collections.Generic.Dictionary<string, torch.Tensor>) seed =
    let g = new torch.Generator(uint64 seed)
    pre
    |> Seq.map (fun kv ->
        kv.Key,
        (if TinyClip.IsMlp kv.Key then kv.Value + torch.randn(kv.Value.shape, generator = g) * 0.05 else kv.Value.clone()))
    |> dict
    |> Collections.Generic.Dictionary

let private images seed n =
    torch.rand([| int64 n; 1L; 28L; 28L |], generator = new torch.Generator(uint64 seed)) * 2.0 - 1.0

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32>()

[<Tests>]
let tests =
    testList "TaskPool" [
        test "tiny CLIP: HF parameter names and embedding shape" {
            use _ = torch.NewDisposeScope()
            let p = model 1
            Expect.isTrue (p.ContainsKey "vision_model.encoder.layers.1.mlp.fc2.weight") "HF name"
            Expect.isTrue (p.ContainsKey "vision_model.pre_layrnorm.weight") "HF's own spelling"
            Expect.equal p["vision_model.embeddings.position_embedding.weight"].shape [| 17L; 16L |] "16 patches + class token"
            let e = TinyClip.Encode(cfg, p, images 2 3)
            Expect.equal e.shape [| 3L; 8L |] "image embeds"
        }
        test "TA with lambda = 1/N equals the simple average; lambda = 0 is the base" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let experts = Collections.Generic.List [ expert pre 2; expert pre 3; expert pre 4 ]
            let taus = StateDictMerges.TaskVectors(pre, experts)
            let avg = StateDictMerges.Average(pre, taus)
            let ta = StateDictMerges.TaskArithmetic(pre, taus, 1.0 / 3.0)
            let zero = StateDictMerges.TaskArithmetic(pre, taus, 0.0)
            for k in pre.Keys do
                let mean = (experts[0][k] + experts[1][k] + experts[2][k]) / 3.0
                Expect.isLessThan (maxDiff avg[k] mean) 1e-6f k
                Expect.isLessThan (maxDiff ta[k] avg[k]) 1e-6f k
                Expect.equal (maxDiff zero[k] pre[k]) 0.0f k
        }
        test "TIES with one expert and density 1 equals TA; outputs keep the elected sign" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let one = StateDictMerges.TaskVectors(pre, Collections.Generic.List [ expert pre 2 ])
            let ties = StateDictMerges.Ties(pre, one, 1.0, 0.7)
            let ta = StateDictMerges.TaskArithmetic(pre, one, 0.7)
            for k in pre.Keys do
                Expect.isLessThan (maxDiff ties[k] ta[k]) 1e-6f k
            // Golden: tau1 = [1, -2, 3], tau2 = [-3, 1, 1]; sums [-2, -1, 4] elect [-, -, +]; kept sums [-3, -2, 4].
            let p0 = readOnlyDict [ "w", torch.zeros(3) ]
            let t =
                Collections.Generic.List [
                    Collections.Generic.Dictionary(dict [ "w", torch.tensor [| 1.0f; -2.0f; 3.0f |] ])
                    Collections.Generic.Dictionary(dict [ "w", torch.tensor [| -3.0f; 1.0f; 1.0f |] ]) ]
            let r = StateDictMerges.Ties(p0, t, 1.0, 1.0)
            Expect.equal (r["w"].data<float32>().ToArray()) [| -3.0f; -2.0f; 4.0f |] "TIES sum merge"
            let m = StateDictMerges.Ties(p0, t, 1.0, 1.0, disjointMean = true)
            Expect.equal (m["w"].data<float32>().ToArray()) [| -3.0f; -2.0f; 2.0f |] "TIES disjoint mean"
        }
        test "global top-k keeps exactly round(density * n) entries" {
            use _ = torch.NewDisposeScope()
            let t = readOnlyDict [ "a", torch.tensor [| 5.0f; -1.0f; 0.5f |]; "b", torch.tensor [| -4.0f; 2.0f |] ]
            let r = StateDictMerges.TopKGlobal(t, 0.4)
            Expect.equal (r["a"].data<float32>().ToArray()) [| 5.0f; 0.0f; 0.0f |] "a"
            Expect.equal (r["b"].data<float32>().ToArray()) [| -4.0f; 0.0f |] "b"
        }
        test "DARE with density 1 is TIES; DARE is deterministic per seed" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let taus = StateDictMerges.TaskVectors(pre, Collections.Generic.List [ expert pre 2; expert pre 3 ])
            let d1 = StateDictMerges.DareTies(pre, taus, 1.0, 0.3, 5)
            let t1 = StateDictMerges.Ties(pre, taus, 1.0, 0.3)
            let a = StateDictMerges.DareTies(pre, taus, 0.5, 0.3, 5)
            let b = StateDictMerges.DareTies(pre, taus, 0.5, 0.3, 5)
            for k in pre.Keys do
                Expect.isLessThan (maxDiff d1[k] t1[k]) 1e-6f k
                Expect.equal (maxDiff a[k] b[k]) 0.0f k
        }
        test "WEMoE at initialisation (routers output lambda) computes the TA(lambda) model" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let taus = StateDictMerges.TaskVectors(pre, Collections.Generic.List [ expert pre 2; expert pre 3 ])
            use moe = new WeMoEModel(cfg, pre, taus, WeMoEOptions(InitLambda = 0.3))
            let x = images 5 4
            // Zero router weights: r = b2 = lambda exactly.
            use _ng = torch.no_grad()
            for p in moe.RouterParameters do
                if p.shape.Length = 2 then p.zero_() |> ignore
            let ta = StateDictMerges.TaskArithmetic(pre, taus, 0.3)
            Expect.isLessThan (maxDiff (moe.Encode x) (TinyClip.Encode(cfg, ta, x))) 1e-5f "TA(0.3)"
        }
        test "WEMoE with one-hot routes computes exactly that expert's MLP, per sample" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let experts = Collections.Generic.List [ expert pre 2; expert pre 3 ]
            let taus = StateDictMerges.TaskVectors(pre, experts)
            use moe = new WeMoEModel(cfg, pre, taus, WeMoEOptions())
            let h = torch.randn(2L, 17L, 16L)
            let routes = torch.tensor([| 1.0f; 0.0f; 0.0f; 1.0f |]).reshape(2, 2)
            let out = moe.MlpWithRoutes(1, h, routes)
            let e0 = TinyClip.Mlp(experts[0], 1, h[0].unsqueeze 0)
            let e1 = TinyClip.Mlp(experts[1], 1, h[1].unsqueeze 0)
            Expect.isLessThan (maxDiff out[0] e0[0]) 1e-5f "sample 0 -> expert 0"
            Expect.isLessThan (maxDiff out[1] e1[0]) 1e-5f "sample 1 -> expert 1"
        }
        test "WEMoE routing of a sample does not depend on its batch-mates" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let taus = StateDictMerges.TaskVectors(pre, Collections.Generic.List [ expert pre 2; expert pre 3 ])
            use moe = new WeMoEModel(cfg, pre, taus, WeMoEOptions())
            let x = images 6 5
            let all = moe.Encode x
            let alone = moe.Encode(x.narrow(0, 2, 1))
            Expect.isLessThan (maxDiff all[2] alone[0]) 1e-5f "same embedding alone or in a batch"
        }
        test "SMILE with rank = full and a single expert reproduces that expert" {
            use _ = torch.NewDisposeScope()
            let pre = model 1
            let experts = Collections.Generic.List [ expert pre 2 ]
            let taus = StateDictMerges.TaskVectors(pre, experts)
            // Non-MLP task vectors are zero here, so TA(lambda) leaves them at the base = expert.
            use smile = new SmileModel(cfg, pre, experts, taus, SmileOptions(Rank = 32, GateRank = 2, TopK = 1), 0.3)
            let x = images 7 3
            // One expert: softmax weight 1 -> W0 + full-rank ΔW = the expert's weights.
            Expect.isLessThan (maxDiff (smile.Encode x) (TinyClip.Encode(cfg, experts[0], x))) 1e-4f "SMILE = expert"
        }
        test "histogram entropy: 1 for uniform predictions, 0 for a single class" {
            use _ = torch.NewDisposeScope()
            let uniform = torch.eye(4L)
            let single = torch.tensor([| 1.0f; 0.0f; 1.0f; 0.0f; 1.0f; 0.0f |]).reshape(3, 2)
            Expect.floatClose Accuracy.veryHigh (TestTimeAdaptation.HistogramEntropy uniform) 1.0 "uniform"
            Expect.isLessThan (abs (TestTimeAdaptation.HistogramEntropy single)) 1e-9 "collapsed"
        }
        test "zoo settings hash changes with any setting" {
            Expect.notEqual (ZooSettings().Hash()) (ZooSettings(FineTuneSteps = 301).Hash()) "hash"
            Expect.equal (ZooSettings().Hash()) (ZooSettings().Hash()) "stable"
        }
    ]

/// The --quick benchmark end to end (trains the quick zoo on first run, ~1-3 minutes on 2 cores).
[<Tests>]
let quickBenchmark =
    testSequenced <| testList "TaskPool quick benchmark" [
        test "bench taskpool --quick writes results.json, results.md and results.png with every method" {
            let root = DataStore.DefaultRoot()
            let s = DataStore(root)
            if not (s.IsAvailable TaskSource.Digits && s.IsAvailable TaskSource.Fashion) then
                skiptestf "data not installed; run: %s" DataStore.InstallCommand
            let out = Path.Combine(Path.GetTempPath(), "mergedsl-taskpool-" + Guid.NewGuid().ToString("N"))
            let r = MergeDsl.Cli.Commands.Taskpool.execute root out true 42 ignore
            for f in [ "results.json"; "results.md"; "results.png" ] do
                Expect.isTrue (File.Exists(Path.Combine(out, f))) f
                Expect.isGreaterThan (FileInfo(Path.Combine(out, f)).Length) 100L (f + " not empty")
            Expect.equal (r.Methods |> Seq.map (fun m -> m.Method) |> List.ofSeq) (List.ofArray TaskPoolBenchmark.MethodOrder) "every method"
            for m in r.Methods do
                Expect.equal m.Accuracy.Count 6 m.Method
                Expect.isTrue (m.Accuracy |> Seq.forall (fun a -> a >= 0.0 && a <= 100.0)) m.Method
            let json = File.ReadAllText(Path.Combine(out, "results.json"))
            Expect.stringContains json "\"average\"" "FusionBench-shaped report"
            let png = File.ReadAllBytes(Path.Combine(out, "results.png"))
            Expect.equal png[1..3] "PNG"B "PNG signature"
            // Individual is each task's own expert and oracle routing uses the same MLPs: equal by construction
            // when fine-tuning moved only MLPs.
            Expect.floatClose Accuracy.high (r.Find("Oracle routing").Average) (r.Find("Individual").Average) "oracle = individual"
            Directory.Delete(out, true)
        }
    ]

/// The zoo's folders are CLIP model folders: the project's CLIP runtime (Models/) reads them and computes the
/// same embeddings and head logits as the task pool's functional model.
[<Tests>]
let interop =
    testList "TaskPool interop" [
        test "a zoo-format folder loads in ClipModelFolder and gives the same embeddings and logits" {
            use _ = torch.NewDisposeScope()
            let p = model 3
            let dir = Path.Combine(Path.GetTempPath(), "mergedsl-zoo-" + Guid.NewGuid().ToString("N"))
            TensorFile.Write(Path.Combine(dir, "model.safetensors"), p)
            File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToHfConfigJson())
            let head = readOnlyDict [ "weight", torch.randn(5L, 8L); "logit_scale", torch.tensor 1.0f ]
            TensorFile.Write(Path.Combine(dir, "heads", "t.safetensors"), head)
            let struct (m, heads) = MergeDsl.Core.Models.ClipModelFolder.LoadPlain dir
            use m = m
            let x = images 9 4
            use _ng = torch.no_grad()
            let theirs = m.forward x
            let ours = TinyClip.Encode(cfg, p, x)
            Expect.isLessThan (maxDiff theirs ours) 1e-5f "same embeddings"
            Expect.isLessThan (maxDiff (heads["t"].forward theirs) (TinyClip.Head(head, ours))) 1e-4f "same logits"
            Directory.Delete(dir, true)
        }
    ]

[<Tests>]
let guard =
    testList "TaskPool adaptation guard" [
        test "entropy minimisation that piles predictions onto one class trips the guard and is undone" {
            use _ = torch.NewDisposeScope()
            let spec = TaskPoolTasks.Find "digits"
            // Images whose first pixel spreads the predictions over 10 classes at the start.
            let n = 200
            let pixels = Array.init (n * 784) (fun k -> if k % 784 = 0 then byte ((k / 784) % 10 * 25) else 0uy)
            let labels = Array.init n (fun i -> int64 (i % 10))
            let set = ImageSet(pixels, labels, 28, 28)
            use task = new TaskTensors(spec, SplitDataset("toy", set, set, spec.Classes))
            let bias = new TorchSharp.Modules.Parameter(torch.zeros(10L), true)
            let centres = torch.linspace(-1.0, 1.0, 10L)
            // Logits peak at the class whose centre is nearest the first pixel; the bias can swamp that.
            let logits (_: int) (x: torch.Tensor) =
                let v = x.flatten(1L).narrow(1L, 0L, 1L)
                let d = v - centres.unsqueeze 0L
                -(d * d) * 5.0 + bias
            let s = AdaptationSettings(Steps = 200, Lr = 0.5, CheckEvery = 10, ProbeImages = 200, CollapseRatio = 0.6)
            let r = TestTimeAdaptation.Run([ bias ], Func<_, _, _> logits, [ task ], s)
            Expect.isTrue r.CollapseDetected "the guard fired"
            Expect.equal (List.ofSeq r.ExcludedTasks) [ "digits" ] "the collapsing task left the objective"
            Expect.isGreaterThanOrEqual r.FinalHistogramEntropy[0] (0.6 * r.InitialHistogramEntropy[0]) "ended on a healthy state"
        }
    ]
