module MergeDsl.Tests.TaskPoolTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Core.Adaptation
open MergeDsl.Core.Checkpoints
open MergeDsl.Bench.Data
open MergeDsl.Core.Evaluation
open MergeDsl.Core.Models
open MergeDsl.Bench.TaskPool

let private settings =
    ZooSettings(
        Model = ClipVisionConfig(HiddenSize = 16, NumHiddenLayers = 2, NumAttentionHeads = 2, IntermediateSize = 32, ProjectionDim = 8,
                                 ImageSize = 28, PatchSize = 7, NumChannels = 1, HiddenAct = "quick_gelu"))

let private model (seed: int64) =
    torch.manual_seed seed |> ignore
    use m = new ClipVisionModel(settings.Model)
    m.StateTensors()

let private isMlp (name: string) = name.Contains ".mlp."

/// An expert: the base with its MLPs perturbed (what MLP-only fine-tuning produces).
let private expert (pre: Dictionary<string, torch.Tensor>) seed =
    let g = new torch.Generator(uint64 seed)
    pre
    |> Seq.map (fun kv ->
        kv.Key,
        (if isMlp kv.Key then kv.Value + torch.randn(kv.Value.shape, generator = g) * 0.05 else kv.Value.clone()))
    |> dict
    |> Dictionary

let private images seed n =
    torch.rand([| int64 n; 1L; 28L; 28L |], generator = new torch.Generator(uint64 seed)) * 2.0 - 1.0

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32>()

let private run recipe (pre: Dictionary<string, torch.Tensor>) (experts: Dictionary<string, torch.Tensor> list) =
    let es = [ for i, e in List.indexed experts -> new InMemorySource($"e{i}", e) :> ITensorSource ]
    TaskPoolRecipes.Run(recipe, new InMemorySource("pre", pre), es, 5L)

[<Tests>]
let tests =
    testList "TaskPool" [
        test "the tiny CLIP shape maps onto the core runtime with HF names" {
            use _ = torch.NewDisposeScope()
            let c = settings.Model
            Expect.equal (c.HiddenSize, c.NumHiddenLayers, c.IntermediateSize, c.ProjectionDim, c.NumChannels) (16, 2, 32, 8, 1) "fields"
            Expect.equal c.HiddenAct "quick_gelu" "CLIP activation"
            let p = model 1L
            Expect.isTrue (p.ContainsKey "vision_model.encoder.layers.1.mlp.fc2.weight") "HF name"
            Expect.equal p["vision_model.embeddings.position_embedding.weight"].shape [| 17L; 16L |] "16 patches + class token"
        }
        test "TA recipe with lambda = 1/N equals the simple average; lambda = 0 is the base" {
            use _ = torch.NewDisposeScope()
            let pre = model 1L
            let experts = [ expert pre 2; expert pre 3; expert pre 4 ]
            let avg = run (TaskPoolRecipes.SimpleAverage()) pre experts
            let ta = run (TaskPoolRecipes.TaskArithmetic(1.0 / 3.0)) pre experts
            let zero = run (TaskPoolRecipes.TaskArithmetic 0.0) pre experts
            for k in pre.Keys do
                let mean = (experts[0][k] + experts[1][k] + experts[2][k]) / 3.0
                Expect.isLessThan (maxDiff avg[k] mean) 1e-6f k
                Expect.isLessThan (maxDiff ta[k] avg[k]) 1e-6f k
                Expect.isLessThan (maxDiff zero[k] pre[k]) 1e-7f k
        }
        test "TIES recipe with one expert and density 1 equals TA; DARE-TIES with density 1 equals TIES and is seeded" {
            use _ = torch.NewDisposeScope()
            let pre = model 1L
            let one = [ expert pre 2 ]
            let ties = run (TaskPoolRecipes.Ties(1.0, 0.7)) pre one
            let ta = run (TaskPoolRecipes.TaskArithmetic 0.7) pre one
            for k in pre.Keys do Expect.isLessThan (maxDiff ties[k] ta[k]) 1e-6f k
            let two = [ expert pre 2; expert pre 3 ]
            let d1 = run (TaskPoolRecipes.DareTies(1.0, 0.3)) pre two
            let t1 = run (TaskPoolRecipes.Ties(1.0, 0.3)) pre two
            let a = run (TaskPoolRecipes.DareTies(0.5, 0.3)) pre two
            let b = run (TaskPoolRecipes.DareTies(0.5, 0.3)) pre two
            for k in pre.Keys do
                Expect.isLessThan (maxDiff d1[k] t1[k]) 1e-6f k
                Expect.equal (maxDiff a[k] b[k]) 0.0f k
        }
        test "TIES keeps the top 20% of each task vector over the whole model" {
            use _ = torch.NewDisposeScope()
            // One tensor of magnitudes 1..10 and one of 11..20: global top-20% keeps 4 of the 20 entries, 17..20.
            let pre = Dictionary(dict [ "a", torch.zeros(10L); "b", torch.zeros(10L) ])
            let e = Dictionary(dict [ "a", torch.arange(1.0f, 11.0f); "b", torch.arange(11.0f, 21.0f) ])
            let r = run (TaskPoolRecipes.Ties(0.2, 1.0)) pre [ e ]
            Expect.equal (r["a"].count_nonzero().item<int64>()) 0L "nothing kept in the small tensor"
            Expect.equal (r["b"].data<float32>().ToArray() |> Array.filter (fun v -> v <> 0.0f)) [| 17.0f; 18.0f; 19.0f; 20.0f |] "the four largest"
        }
        test "histogram entropy: 1 for uniform predictions, 0 for a single class" {
            use _ = torch.NewDisposeScope()
            let uniform = torch.eye(4L)
            let single = torch.tensor([| 1.0f; 0.0f; 1.0f; 0.0f; 1.0f; 0.0f |]).reshape(3, 2)
            Expect.floatClose Accuracy.veryHigh (CollapseGuard.HistogramEntropy uniform) 1.0 "uniform"
            Expect.isLessThan (abs (CollapseGuard.HistogramEntropy single)) 1e-9 "collapsed"
        }
        test "zoo hash changes with any setting and with the task pool (regression: a changed task reused the old experts)" {
            let pool = TaskPoolTasks.All
            let h (s: ZooSettings) = s.Hash pool
            Expect.notEqual (h (ZooSettings())) (h (ZooSettings(FineTuneSteps = 301))) "a setting"
            Expect.equal (h (ZooSettings())) (h (ZooSettings())) "stable"
            let changed = pool |> Seq.map (fun t -> if t.Name = "digits-rot90" then TaskSpec(t.Name, t.Source, [ ImageTransform.FlipVertical ], t.LabelMap, t.Classes, t.Description) else t)
            Expect.notEqual (ZooSettings().Hash changed) (h (ZooSettings())) "same name, other transform"
            let relabelled = pool |> Seq.map (fun t -> if t.Name = "digits" then TaskSpec(t.Name, t.Source, t.Transforms, Array.rev (Array.ofSeq t.LabelMap), t.Classes, t.Description) else t)
            Expect.notEqual (ZooSettings().Hash relabelled) (h (ZooSettings())) "same name, other labels"
            // The full zoo of docs/results.md is cached under this name; a change here retrains it (~9 min).
            Expect.equal (h (ZooSettings())) "e9848144f1d4" "default zoo hash"
        }
        test "targets of a run of some methods are null in JSON, not NaN (regression: --methods crashed the JSON writer)" {
            let row name acc = MethodResult(name, [ acc; acc ], 1.0, readOnlyDict [])
            let r = BenchmarkResult([ "a"; "b" ], [ row "WEMoE" 70.0 ], [ struct ("wemoe", 2.0) ], "m", false, "z", true, readOnlyDict [])
            let json = (BenchmarkReports.ToJson r).ToJsonString()
            Expect.stringContains json "\"wemoe_fraction_of_ta_to_individual_gap\":null" "gap"
            Expect.stringContains json "\"oracle_minus_wemoe_points\":null" "oracle"
        }
    ]

/// The --quick benchmark end to end (trains the quick zoo on first run, ~1-3 minutes on 2 cores).
[<Tests>]
let quickBenchmark =
    testSequencedGroup "quick task-pool zoo" <| testList "TaskPool quick benchmark" [
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

/// The zoo's folders are CLIP model folders that the core runtime reads back.
[<Tests>]
let interop =
    testList "TaskPool interop" [
        test "a zoo-format folder loads in ClipModelFolder and gives the same embeddings and logits" {
            use _ = torch.NewDisposeScope()
            let p = model 3L
            let dir = Path.Combine(Path.GetTempPath(), "mergedsl-zoo-" + Guid.NewGuid().ToString("N"))
            TensorFile.Write(Path.Combine(dir, "model.safetensors"), p)
            File.WriteAllText(Path.Combine(dir, "config.json"), settings.ModelConfigJson())
            let head = readOnlyDict [ "weight", torch.randn(5L, 8L); "logit_scale", torch.tensor 1.0f ]
            TensorFile.Write(Path.Combine(dir, "heads", "t.safetensors"), head)
            let struct (m, heads) = ClipModelFolder.LoadPlain dir
            use m = m
            use ours = new ClipVisionModel(settings.Model)
            ours.LoadWeights(p) |> ignore
            use h = ZooBuilder.ToHead("t", head)
            let x = images 9 4
            use _ng = torch.no_grad()
            let theirs = m.forward x
            Expect.isLessThan (maxDiff theirs (ours.forward x)) 1e-6f "same embeddings"
            Expect.isLessThan (maxDiff (heads["t"].forward theirs) (h.forward theirs)) 1e-5f "same logits"
            let pp = ClipModelFolder.ReadPreprocess(ClipModelFolder.ReadConfigJson dir)
            Expect.equal (pp.Mean, pp.Std) ([| 0.5f |], [| 0.5f |]) "images mapped to [-1, 1]"
            Directory.Delete(dir, true)
        }
    ]

[<Tests>]
let guard =
    testList "TaskPool adaptation guard" [
        test "entropy minimisation that piles predictions onto one class trips the guard and is undone" {
            use _ = torch.NewDisposeScope()
            // Images whose first pixel spreads the predictions over 10 classes at the start.
            let n = 200L
            let pixels = torch.linspace(-1.0, 1.0, 10L).repeat(20L).reshape(n, 1L, 1L, 1L).expand(n, 1L, 2L, 2L).contiguous()
            let data = [ new TaskData("digits", pixels, null) ]
            let bias = new TorchSharp.Modules.Parameter(torch.zeros(10L), true)
            let centres = torch.linspace(-1.0, 1.0, 10L)
            // Logits peak at the class whose centre is nearest the first pixel; the bias can swamp that.
            let logits (batches: IReadOnlyList<torch.Tensor>) : IReadOnlyList<torch.Tensor> =
                [| for x in batches ->
                    let v = x.flatten(1L).narrow(1L, 0L, 1L)
                    let d = v - centres.unsqueeze 0L
                    -(d * d) * 5.0 + bias |] :> _
            let s = AdaptationSettings(Options = AdaptOptions(Steps = 200, LearningRate = 0.5), CheckEvery = 10, ProbeImages = 200, CollapseRatio = 0.6)
            use g = new CollapseGuard(s, [ pixels ])
            let r = AdaptationLoop.Run([ bias ], [ "bias" ], data, Func<_, _> logits, s.Options, 1e-3, null, monitor = g)
            let rep = g.Report()
            Expect.isTrue rep.CollapseDetected "the guard fired"
            Expect.equal (List.ofSeq rep.ExcludedTasks) [ "digits" ] "the collapsing task left the objective"
            Expect.isLessThan r.Log.Count 200 "no task left in the objective: adaptation ended early"
            Expect.isGreaterThanOrEqual rep.FinalHistogramEntropy[0] (0.6 * rep.InitialHistogramEntropy[0]) "ended on a healthy state"
        }
    ]
