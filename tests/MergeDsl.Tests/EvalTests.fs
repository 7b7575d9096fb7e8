module MergeDsl.Tests.EvalTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Core.Models
open MergeDsl.Core.Evaluation
open MergeDsl.Tests.ClipTests

[<Tests>]
let tests =
    testList "Evaluation" [
        test "accuracy and loss match a hand computation; the JSON has FusionBench's shape" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            use m = randomModel cfg 41L
            let head = new ClassificationHead("t", torch.nn.functional.normalize(torch.randn([| 3L; 8L |]), dim = -1L), 10.0f)
            let images = torch.randn([| 10L; 3L; 8L; 8L |])
            use _ng = torch.no_grad ()
            let logits = head.forward(m.forward images)
            let pred = logits.argmax(-1L)
            // first 7 labels are the predictions, last 3 are shifted: accuracy exactly 0.7
            let labels = torch.cat([| pred.narrow(0L, 0L, 7L); (pred.narrow(0L, 7L, 3L) + torch.tensor 1L).remainder(torch.tensor 3L) |], 0L)
            let expectedLoss = torch.nn.functional.cross_entropy(logits, labels).item<float32> ()
            let data = new TaskData("t", images, labels)
            let report = Evaluator.Evaluate(m, readOnlyDict [ "t", head ], [| data |], 4, torch.CPU)
            let s = report.Tasks.[0]
            Expect.floatClose Accuracy.high s.Accuracy 0.7 "7 of 10"
            Expect.floatClose Accuracy.medium s.Loss (float expectedLoss) "mean cross-entropy"
            let j = report.ToJson()
            Expect.floatClose Accuracy.high (j.["t"].["accuracy"].GetValue<float>()) 0.7 "task entry"
            Expect.floatClose Accuracy.high (j.["average"].["accuracy"].GetValue<float>()) 0.7 "average"
            Expect.isNotNull (j.["model_info"]) "model_info"
        }

        test "data folder round trip; u8 [N,H,W] images read as one channel; bad labels fail naming the file" {
            let dir = Path.Combine(Path.GetTempPath(), $"mergedsl-data-{Guid.NewGuid():N}")
            Directory.CreateDirectory dir |> ignore
            try
                TaskDataFolder.Save(Path.Combine(dir, "digits.safetensors"), torch.zeros([| 5L; 8L; 8L |], dtype = torch.uint8), torch.arange(5L))
                TaskDataFolder.Save(Path.Combine(dir, "bad.safetensors"), torch.zeros([| 5L; 1L; 8L; 8L |]), torch.arange(4L))
                Expect.sequenceEqual (TaskDataFolder.Tasks dir) [ "bad"; "digits" ] "tasks"
                use d = TaskDataFolder.Load(Path.Combine(dir, "digits.safetensors"), true)
                Expect.sequenceEqual d.Images.shape [| 5L; 1L; 8L; 8L |] "channel added"
                let e = Expect.throwsT<MergeDsl.Core.Checkpoints.CheckpointFormatException> (fun () -> TaskDataFolder.Load(Path.Combine(dir, "bad.safetensors"), true) |> ignore) "labels"
                ()
            finally
                Directory.Delete(dir, true)
        }

        test "a label outside the head's classes is an error, not a wrong number" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            use m = randomModel cfg 42L
            let head = new ClassificationHead("t", torch.randn([| 3L; 8L |]), 10.0f)
            let data = new TaskData("t", torch.randn([| 4L; 3L; 8L; 8L |]), torch.tensor([| 0L; 1L; 2L; 3L |]))
            Expect.throwsT<ArgumentException> (fun () -> Evaluator.Evaluate(m, readOnlyDict [ "t", head ], [| data |], 4, torch.CPU) |> ignore) "label 3"
        }
    ]
