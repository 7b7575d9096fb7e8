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
