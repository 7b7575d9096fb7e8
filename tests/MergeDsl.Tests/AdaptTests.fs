module MergeDsl.Tests.AdaptTests

open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Core.Evaluation
open MergeDsl.Core.Adaptation
open MergeDsl.Tests.ClipTests
open MergeDsl.Tests.WemoeTests

let tinyTasks (seed: int64) =
    torch.manual_seed seed |> ignore
    [ for t in [ "a"; "b" ] ->
        new TaskData(t, torch.randn([| 32L; 3L; 8L; 8L |]), null) ]

let tinyHeads (seed: int64) =
    torch.manual_seed seed |> ignore
    readOnlyDict [ for t in [ "a"; "b" ] -> t, new ClassificationHead(t, torch.nn.functional.normalize(torch.randn([| 4L; 8L |]), dim = -1L), 5.0f) ]

/// Σ over tasks of mean entropy on all of a task's images.
let objective (model: torch.nn.Module<torch.Tensor, torch.Tensor>) (heads: IReadOnlyDictionary<string, ClassificationHead>) (data: TaskData list) =
    use _ = torch.no_grad ()
    data |> List.sumBy (fun d -> float (EntropyObjective.MeanEntropy(heads.[d.Task].forward(model.forward d.Images)).item<float32> ()))

[<Tests>]
let tests =
    testList "Test-time adaptation" [
        test "WEMoE router adaptation lowers the entropy objective and changes only router parameters" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 31L 2
            let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 2))
            use _m = moe.Model
            let heads = tinyHeads 32L
            let data = tinyTasks 33L
            let before = moe.Model.StateTensors()
            let h0 = objective moe.Model heads data
            let steps = List<AdaptStep>()
            let r = RouterAdaptation.Run(moe, heads, data, null, AdaptOptions(Steps = 40, BatchPerTask = 16, LearningRate = 1e-2), fun s -> steps.Add s)
            let h1 = objective moe.Model heads data
            Expect.isLessThan h1 (h0 * 0.995) $"objective {h0} -> {h1}"
            Expect.equal steps.Count 40 "one callback per step"
            Expect.equal r.Log.Count 40 "log"
            Expect.isGreaterThan r.StepsPerSecond 0.0 "speed measured"
            let after = moe.Model.StateTensors()
            let routers = moe.RouterParameterNames() |> Set.ofSeq
            for KeyValue(name, t) in before do
                let same = t.allclose(after.[name], 0.0, 0.0)
                if routers.Contains name then () else Expect.isTrue same $"{name} unchanged"
            Expect.isTrue (routers |> Seq.exists (fun n -> not (before.[n].allclose(after.[n], 0.0, 0.0)))) "routers changed"
        }

        test "adaptation refuses a model without routers and tasks without heads" {
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 34L 2
            let smile = upscale cfg b experts (UpscaleSpec(Kind = MoeKind.Smile, Rank = 2, GateRank = 1))
            use _m = smile.Model
            Expect.throwsT<System.ArgumentException> (fun () -> RouterAdaptation.Run(smile, tinyHeads 1L, tinyTasks 2L, null, AdaptOptions(Steps = 1)) |> ignore) "SMILE"
            let we = upscale cfg b experts (UpscaleSpec())
            use _w = we.Model
            let onlyA = readOnlyDict [ "a", (tinyHeads 1L).["a"] ]
            Expect.throwsT<System.ArgumentException> (fun () -> RouterAdaptation.Run(we, onlyA, tinyTasks 2L, null, AdaptOptions(Steps = 1)) |> ignore) "no head b"
        }

        for gran in [ AdaMergingGranularity.TaskWise; AdaMergingGranularity.LayerWise ] do
            test $"AdaMerging ({gran}) lowers the objective; 0 steps gives TA(0.3)" {
                use _ = torch.NewDisposeScope()
                let cfg = tinyConfig "quick_gelu"
                let b, experts = zoo cfg 35L 2
                let bs, es = sources b experts
                let heads = tinyHeads 36L
                let data = tinyTasks 37L
                let r0 = AdaMerging.Run(cfg, bs, es, heads, data, null, AdaptOptions(Steps = 0), AdaMergingOptions(gran))
                use ta = taModel cfg b experts 0.3
                let x = torch.randn([| 2L; 3L; 8L; 8L |])
                use _ng = torch.no_grad ()
                Expect.isLessThan (maxDiff (r0.Model.forward x) (ta.forward x)) 1e-5f "TA(0.3)"
                let h0 = objective r0.Model heads data
                let r = AdaMerging.Run(cfg, bs, es, heads, data, null, AdaptOptions(Steps = 25, LearningRate = 3e-2), AdaMergingOptions(gran))
                let h1 = objective r.Model heads data
                Expect.isLessThan h1 (h0 * 0.995) $"objective {h0} -> {h1}"
                let rows = if gran = AdaMergingGranularity.TaskWise then 1L else int64 r.ParameterOrder.Count
                Expect.sequenceEqual r.Lambdas.shape [| rows; 2L |] "λ shape"
                Expect.isTrue ((r.Lambdas.min().item<float32> ()) >= 0.0f && (r.Lambdas.max().item<float32> ()) <= 1.0f) "clamped to [0,1]"
                r0.Model.Dispose(); r.Model.Dispose()
            }
    ]

/// A monitor that records what it saw and steers the loop: stops after `stopAt` steps, drops task "b" from the
/// objective after step 1.
type private Steering(stopAt: int) =
    member val Calls = List<string>()
    member val Kept: torch.Tensor = null with get, set
    interface IAdaptMonitor with
        member this.Start _ = this.Calls.Add "start"
        member this.AfterStep(s, c) =
            this.Calls.Add $"step {s.Step}"
            if s.Step = 1 then
                c.InObjective.[1] <- false
                // A snapshot taken here must outlive the step (the guard restores from such snapshots).
                this.Kept <- c.Trainable.[0].detach().clone()
            if s.Step = stopAt then c.Stop <- true
        member this.Finish _ = this.Calls.Add $"finish {this.Kept.shape.[0]}" 

[<Tests>]
let objectiveTests =
    testList "Adaptation objectives" [
        test "entropy and entropy-diversity on hand-checked logits" {
            use _ = torch.NewDisposeScope()
            // Rows: p = (1/2, 1/2) and p = (3/4, 1/4); batch mean (5/8, 3/8).
            let logits = torch.tensor([| 0.0f; 0.0f; float32 (log 3.0); 0.0f |]).reshape(2L, 2L)
            let h (ps: float list) = -(ps |> List.sumBy (fun p -> p * log p))
            let mean = (h [ 0.5; 0.5 ] + h [ 0.75; 0.25 ]) / 2.0     // 0.62771
            let marginal = h [ 0.625; 0.375 ]                         // 0.66156
            let v (t: torch.Tensor) = float (t.item<float32> ())
            Expect.floatClose Accuracy.medium (v (EntropyObjective.MeanEntropy logits)) mean "mean entropy"
            Expect.floatClose Accuracy.medium (v (EntropyObjective.MarginalEntropy logits)) marginal "entropy of the mean prediction"
            Expect.floatClose Accuracy.medium (v (EntropyObjective.Loss(AdaptObjective.Entropy, logits))) mean "entropy objective"
            Expect.floatClose Accuracy.medium (v (EntropyObjective.Loss(AdaptObjective.EntropyDiversity, logits))) (mean - marginal) "weight 1"
            Expect.floatClose Accuracy.medium (v (EntropyObjective.Loss(AdaptObjective.EntropyDiversity, logits, 0.5))) (mean - 0.5 * marginal) "weight 1/2"
        }

        test "entropy-diversity scores one confident class for everything log C worse than confident, spread predictions" {
            use _ = torch.NewDisposeScope()
            let c = 4L
            let oneClass = torch.tensor(Array.init 32 (fun i -> if i % 4 = 0 then 20.0f else 0.0f)).reshape(8L, c)
            let spread = torch.eye(c).mul(torch.tensor 20.0f).repeat(2L, 1L)
            let v (t: torch.Tensor) = float (t.item<float32> ())
            let e1, e2 = v (EntropyObjective.MeanEntropy oneClass), v (EntropyObjective.MeanEntropy spread)
            Expect.floatClose Accuracy.medium e1 e2 "plain entropy cannot tell them apart"
            let d1 = v (EntropyObjective.Loss(AdaptObjective.EntropyDiversity, oneClass))
            let d2 = v (EntropyObjective.Loss(AdaptObjective.EntropyDiversity, spread))
            Expect.floatClose Accuracy.medium (d1 - d2) (log (float c)) "collapse costs log C"
        }

        test "adapting a logit bias: under entropy a favoured class swallows a neighbour, entropy-diversity keeps every class" {
            // The failure the task-pool benchmark met: a free parameter that makes everything one confident class.
            let run objective =
                use _ = torch.NewDisposeScope()
                // 200 one-pixel images, 50 at each of four class centres; logits -5 d^2 to each centre plus a bias.
                let centres = torch.linspace(-1.0, 1.0, 4L)
                let pixels = centres.repeat(50L).reshape(200L, 1L, 1L, 1L)
                let data = [ new TaskData("t", pixels, null) ]
                // Class 0 slightly favoured at the start: entropy's gradient then feeds that one class.
                let bias = new TorchSharp.Modules.Parameter(torch.tensor([| 0.5f; 0.0f; 0.0f; 0.0f |]), true)
                let logits (batches: IReadOnlyList<torch.Tensor>) : IReadOnlyList<torch.Tensor> =
                    [| for x in batches ->
                        let d = x.flatten(1L) - centres.unsqueeze 0L
                        -(d * d) * 5.0 + bias |] :> _
                AdaptationLoop.Run([ bias ], [ "bias" ], data, System.Func<_, _> logits,
                    AdaptOptions(Steps = 300, BatchPerTask = 32, LearningRate = 0.2, Objective = objective), 1e-3, null) |> ignore
                use _ng = torch.no_grad ()
                MergeDsl.Bench.TaskPool.CollapseGuard.HistogramEntropy((logits [ pixels ]).[0])
            let collapsed = run AdaptObjective.Entropy
            let kept = run AdaptObjective.EntropyDiversity
            // 0.75 = three of four classes left (measured); 1 = all four equally often.
            Expect.isLessThan collapsed 0.9 $"entropy: prediction histogram entropy {collapsed}"
            Expect.isGreaterThan kept 0.99 $"entropy-diversity: prediction histogram entropy {kept}"
        }

        test "supervised: mean cross-entropy against the labels (hand-checked); refused without labels, naming the task" {
            use _ = torch.NewDisposeScope()
            let logits = torch.tensor([| 0.0f; 0.0f; float32 (log 3.0); 0.0f |]).reshape(2L, 2L)
            // Row 0: p(0) = 1/2, loss ln 2; row 1: p(1) = 1/4, loss ln 4.
            let loss = EntropyObjective.Loss(AdaptObjective.Supervised, logits, labels = torch.tensor([| 0L; 1L |]))
            Expect.floatClose Accuracy.medium (float (loss.item<float32> ())) ((log 2.0 + log 4.0) / 2.0) "cross-entropy"
            let data = tinyTasks 61L
            let w = new TorchSharp.Modules.Parameter(torch.zeros(8L, 4L), true)
            let logitsOf (batches: IReadOnlyList<torch.Tensor>) : IReadOnlyList<torch.Tensor> =
                [| for x in batches -> x.flatten(1L).narrow(1L, 0L, 8L).matmul w |] :> _
            Expect.throwsC (fun () ->
                AdaptationLoop.Run([ w ], [ "w" ], data, System.Func<_, _> logitsOf,
                    AdaptOptions(Steps = 1, Objective = AdaptObjective.Supervised), 1e-3, null) |> ignore)
                (fun e -> Expect.stringContains e.Message "task a: the supervised objective needs labels" "names the task")
            Expect.equal (EntropyObjective.Parse "Supervised") AdaptObjective.Supervised "parse"
            Expect.equal (EntropyObjective.Name AdaptObjective.EntropyDiversity) "entropy-diversity" "name"
        }

        test "supervised routers learn from labels: the cross-entropy on the labelled tasks falls" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 62L 2
            let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 2))
            use _m = moe.Model
            let heads = tinyHeads 63L
            let g = new torch.Generator(65UL)
            let labelled = [ for d in tinyTasks 64L -> new TaskData(d.Task, d.Images, torch.randint(0L, 4L, [| d.Count |], generator = g)) ]
            let crossEntropy () =
                use _ng = torch.no_grad ()
                labelled |> List.averageBy (fun d -> float (torch.nn.functional.cross_entropy(heads.[d.Task].forward(moe.Model.forward d.Images), d.Labels).item<float32> ()))
            let before = crossEntropy ()
            RouterAdaptation.Run(moe, heads, labelled, null, AdaptOptions(Steps = 60, BatchPerTask = 16, LearningRate = 1e-2, Objective = AdaptObjective.Supervised)) |> ignore
            let after = crossEntropy ()
            Expect.isLessThan after (before * 0.95) $"cross-entropy {before} -> {after}"
        }

        test "distillation: KL(teacher ‖ student) hand-checked, 0 against itself; refused without a teacher" {
            use _ = torch.NewDisposeScope()
            // Teacher p = (1/2, 1/2), student q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2.
            let teacher = torch.tensor([| 0.0f; 0.0f |]).reshape(1L, 2L)
            let student = torch.tensor([| float32 (log 3.0); 0.0f |]).reshape(1L, 2L)
            let v (t: torch.Tensor) = float (t.item<float32> ())
            Expect.floatClose Accuracy.medium (v (EntropyObjective.Loss(AdaptObjective.Distillation, student, teacherLogits = teacher))) (0.5 * log (2.0 / 3.0) + 0.5 * log 2.0) "KL"
            Expect.floatClose Accuracy.high (v (EntropyObjective.Kl(student, student))) 0.0 "KL to itself"
            let data = tinyTasks 66L
            let w = new TorchSharp.Modules.Parameter(torch.zeros(8L, 4L), true)
            let logitsOf (batches: IReadOnlyList<torch.Tensor>) : IReadOnlyList<torch.Tensor> =
                [| for x in batches -> x.flatten(1L).narrow(1L, 0L, 8L).matmul w |] :> _
            Expect.throwsC (fun () ->
                AdaptationLoop.Run([ w ], [ "w" ], data, System.Func<_, _> logitsOf,
                    AdaptOptions(Steps = 1, Objective = AdaptObjective.Distillation), 1e-3, null) |> ignore)
                (fun e -> Expect.stringContains e.Message "distillation objective needs the experts" "says what is missing")
        }

        test "distillation from expert 1 moves the routes towards expert 1 and lowers the KL" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 67L 2
            let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 2, RestLambda = 0.0))
            use _m = moe.Model
            let heads = tinyHeads 68L
            let data = tinyTasks 69L
            // The teacher of both tasks: the base with expert 1's MLPs, which is what routes (0, 1) give.
            use teacherModel = new ClipVisionModel(cfg)
            let weights = Dictionary<string, torch.Tensor>()
            for KeyValue(k, t) in b do weights.[k] <- (if k.Contains ".mlp." then experts.[1].[k] else t)
            teacherModel.LoadWeights(weights) |> ignore
            let teacher = System.Func<int, torch.Tensor, torch.Tensor>(fun t x -> heads.[data.[t].Task].forward(teacherModel.forward x))
            let kl () =
                use _ng = torch.no_grad ()
                data |> List.mapi (fun i d -> float (EntropyObjective.Kl(teacher.Invoke(i, d.Images), heads.[d.Task].forward(moe.Model.forward d.Images)).item<float32> ())) |> List.average
            let meanRoute () =
                let r = MergeDsl.Bench.TaskPool.RouteSummary.Measure(moe, data, ImagePreprocess.Symmetric 3, 32)
                r.Layers |> Seq.averageBy (fun l -> l |> Array.averageBy (fun row -> row.[1] - row.[0]))
            let kl0, gap0 = kl (), meanRoute ()
            RouterAdaptation.Run(moe, heads, data, null, AdaptOptions(Steps = 80, BatchPerTask = 16, LearningRate = 1e-2, Objective = AdaptObjective.Distillation),
                                 teacher = teacher) |> ignore
            let kl1, gap1 = kl (), meanRoute ()
            Expect.isLessThan kl1 (kl0 * 0.5) $"KL {kl0} -> {kl1}"
            Expect.isGreaterThan gap1 (gap0 + 0.2) $"route(expert 1) - route(expert 0): {gap0} -> {gap1}"
        }

        test "a negative or infinite diversity weight is refused with the setting's name (the CLI maps it to --diversity)" {
            Expect.throwsC (fun () -> AdaptOptions(DiversityWeight = -1.0).Validate() |> ignore)
                (fun (e: exn) ->
                    Expect.isTrue (e :? MergeDsl.Core.SettingException) "type"
                    Expect.equal (e :?> MergeDsl.Core.SettingException).Setting "diversity weight" "names the setting in the core's terms"
                    Expect.equal (MergeDsl.Cli.Jobs.Failure.optionOf "diversity weight") "--diversity" "the CLI's option")
            Expect.throwsT<MergeDsl.Core.SettingException> (fun () -> AdaptOptions(DiversityWeight = infinity).Validate() |> ignore) "infinite (an ArgumentException)"
        }
    ]

[<Tests>]
let routeSummaryTests =
    testList "Route summary" [
        test "mean routes per layer and task: forced routes come back exactly; the diagonal line names the winner" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 51L 2
            let moe = upscale cfg b experts (UpscaleSpec(RouterDepth = 2))
            use _m = moe.Model
            let data = tinyTasks 52L
            let pre = ImagePreprocess.Symmetric 3
            moe.ForceRoutes(torch.tensor([| 0.25f; 0.75f |]).reshape(1L, 2L))
            let r = MergeDsl.Bench.TaskPool.RouteSummary.Measure(moe, data, pre, 8)
            Expect.equal r.Layers.Count 2 "one entry per upscaled MLP"
            for layer in r.Layers do
                for row in layer do
                    Expect.sequenceEqual row [| 0.25; 0.75 |] "forced routes"
            Expect.equal (r.LastLayerDiagonal()) "a 0.25 (max 0.75 on b), b 0.75" "diagonal"
            moe.ForceRoutes null
            // Unadapted routers: W ~ N(0, 0.01^2), so every route is close to the initial lambda.
            let r0 = MergeDsl.Bench.TaskPool.RouteSummary.Measure(moe, data, pre, 8)
            for layer in r0.Layers do
                for row in layer do
                    for v in row do Expect.floatClose { absolute = 0.02; relative = 0.0 } v 0.3 "initial lambda"
        }
    ]

[<Tests>]
let loopTests =
    testList "Adaptation loop" [
        test "a monitor sees start, every step and finish, can stop the loop and drop a task from the objective" {
            use _ = torch.NewDisposeScope()
            let heads = tinyHeads 40L
            let data = tinyTasks 41L
            let w = new TorchSharp.Modules.Parameter(torch.randn([| 8L; 8L |], generator = new torch.Generator(3UL)), true)
            let logits (batches: IReadOnlyList<torch.Tensor>) : IReadOnlyList<torch.Tensor> =
                [| for i, x in Seq.indexed batches -> heads.[data.[i].Task].forward(x.flatten(1L).narrow(1L, 0L, 8L).matmul w) |] :> _
            let m = Steering(3)
            let r = AdaptationLoop.Run([ w ], [ "w" ], data, System.Func<_, _> logits, AdaptOptions(Steps = 10, BatchPerTask = 4), 1e-2, null, monitor = m)
            Expect.equal (List.ofSeq m.Calls) [ "start"; "step 1"; "step 2"; "step 3"; "finish 8" ] "stopped after step 3"
            Expect.equal r.Log.Count 3 "three steps logged"
            let s1 = r.Log.[0]
            Expect.floatClose Accuracy.medium s1.Loss (s1.TaskEntropy.["a"] + s1.TaskEntropy.["b"]) "both tasks at step 1"
            for s in Seq.skip 1 r.Log do
                Expect.floatClose Accuracy.medium s.Loss s.TaskEntropy.["a"] "only task a after step 1"
        }
    ]
