/// The streaming executor: end to end on safetensors folders, errors, dtypes, progress, seeding.
module MergeDsl.Tests.ExecutorTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Tests.AlgebraSupport
open MergeDsl.Tests.TestSupport

let private tempDir () = tempDir "exec"

let private writeModel (folder: string) (tensors: (string * torch.Tensor) list) =
    let d = Dictionary<string, torch.Tensor>()
    for (n, t) in tensors do d[n] <- t
    CheckpointWriter.WriteAll(folder, d, CheckpointWriterOptions())
    File.WriteAllText(Path.Combine(folder, "config.json"), """{"model_type":"tiny"}""")

[<Tests>]
let tests =
    testList "Executor" [
        test "merges safetensors folders: values, metadata, config copied, atomic output" {
            let root = tempDir ()
            try
                let b, e1, e2, out = Path.Combine(root, "base"), Path.Combine(root, "e1"), Path.Combine(root, "e2"), Path.Combine(root, "out")
                writeModel b [ "w", vec [ 1.0; 2.0 ]; "ids", torch.tensor([| 5L; 6L |]) ]
                writeModel e1 [ "w", vec [ 3.0; 2.0 ]; "ids", torch.tensor([| 5L; 6L |]) ]
                writeModel e2 [ "w", vec [ 1.0; 6.0 ]; "ids", torch.tensor([| 5L; 6L |]) ]
                use cb = Checkpoint.Open b
                use c1 = Checkpoint.Open e1
                use c2 = Checkpoint.Open e2
                let ins = MergeInputs(NamedSource("base", cb), [| NamedSource("e1", c1); NamedSource("e2", c2) |])
                let struct (plan, stats) = Merger.ToFolder(Methods.taskArithmetic 0.5, ins, out)
                Expect.equal stats.Tensors 2 "two tensors"
                use merged = Checkpoint.Open out
                use w = merged.Load "w"
                Expect.equal (values w) [| 2.0f; 4.0f |] "θ0 + 0.5(τ1 + τ2)"
                use ids = merged.Load "ids"
                Expect.equal (ids.data<int64>().ToArray()) [| 5L; 6L |] "int tensor copied"
                Expect.equal merged.Metadata["mergedsl.method"] "task-arithmetic" "method"
                Expect.equal merged.Metadata["mergedsl.parameters"] "lambda=0.5" "parameters"
                Expect.equal merged.Metadata["mergedsl.experts"] "e1;e2" "experts"
                Expect.isTrue (File.Exists(Path.Combine(out, "config.json"))) "config copied"
                Expect.isGreaterThan plan.BytesWritten 0L "bytes"
            finally
                Directory.Delete(root, true)
        }

        test "a NaN/Inf result stops the merge naming the parameter, and leaves no output" {
            let root = tempDir ()
            try
                let out = Path.Combine(root, "out")
                let ins = inputs (Some(model "base" [ "ok", vec [ 1.0 ]; "blows.up", vec [ 3e38 ] ])) [ model "e1" [ "ok", vec [ 1.0 ]; "blows.up", vec [ -3e38 ] ] ]
                // τ = -6e38 overflows float32 to -inf
                Expect.throwsC (fun () -> Merger.ToFolder(Methods.taskArithmetic 1.0, ins, out) |> ignore) (fun e ->
                    match e with
                    | :? NonFiniteTensorException as n ->
                        Expect.stringContains n.Message "blows.up: the merged tensor has 1 NaN/Inf value" "message"
                        Expect.isNull n.Model "the output, not an input"
                    | e -> failtestf "expected NonFiniteTensorException, got %O" e)
                Expect.isFalse (Directory.Exists out) "no output folder"
                let r = runWith (MergeOptions(AllowNonFinite = true)) (Methods.taskArithmetic 1.0) ins
                Expect.isTrue (Single.IsInfinity r["blows.up"].[0]) "allowed when asked"
            finally
                Directory.Delete(root, true)
        }

        test "masks depend only on (seed, parameter, position): same result alone or among other tensors" {
            let x = vec [ 1.0; 2.0; 3.0; 4.0; 5.0; 6.0; 7.0; 8.0 ]
            let z = vec (List.replicate 8 0.0)
            let opts = MergeOptions(Seed = 42L)
            let alone = runWith opts (Methods.dareLinear 0.5 1.0 Inverse) (inputs (Some(model "base" [ "w", z ])) [ model "e1" [ "w", x ] ])
            let among =
                runWith opts (Methods.dareLinear 0.5 1.0 Inverse)
                    (inputs (Some(model "base" [ "a", z; "w", z; "zz", z ])) [ model "e1" [ "a", x; "w", x; "zz", x ] ])
            Expect.equal among["w"] alone["w"] "same mask"
            Expect.notEqual among["a"] among["w"] "different names, different masks"
            let other = runWith (MergeOptions(Seed = 43L)) (Methods.dareLinear 0.5 1.0 Inverse) (inputs (Some(model "base" [ "w", z ])) [ model "e1" [ "w", x ] ])
            Expect.notEqual other["w"] alone["w"] "another seed"
        }

        test "compute and output dtypes: float32 by default, bf16 kept on request, F16 output" {
            let b16 = (vec [ 1.0; 2.0 ]).``to``(torch.ScalarType.BFloat16)
            let e16 = (vec [ 3.0; 4.0 ]).``to``(torch.ScalarType.BFloat16)
            let ins = inputs (Some(model "base" [ "w", b16 ])) [ model "e1" [ "w", e16 ] ]
            let plan = Compiler.Compile(Methods.taskArithmetic 0.5, ins)
            Expect.equal plan.Tensors[0].OutputDType DType.BF16 "keeps the input dtype"
            let plan16 = Compiler.Compile(Methods.taskArithmetic 0.5, ins, CompileOptions(OutputDType = Nullable DType.F16))
            use sink = new MemorySink()
            Executor.Run(plan16, sink, MergeOptions(ComputeDType = Nullable())) |> ignore
            Expect.equal sink.Tensors["w"].dtype torch.ScalarType.Float16 "F16 output"
            Expect.equal (values sink.Tensors["w"]) [| 2.0f; 3.0f |] "values"
        }

        test "a tiny prefetch budget still streams every tensor in plan order, with progress" {
            let names = [ for i in 0..9 -> $"layers.{i}.w" ]
            let ins = inputs (Some(model "base" [ for n in names -> n, vec [ 1.0; 1.0; 1.0 ] ])) [ model "e1" [ for n in names -> n, vec [ 2.0; 2.0; 2.0 ] ] ]
            let progress = System.Collections.Concurrent.ConcurrentQueue<MergeProgress>()
            let plan = Compiler.Compile(Methods.taskArithmetic 1.0, ins)
            use sink = new MemorySink()
            let stats = Executor.Run(plan, sink, MergeOptions(MaxPrefetchBytes = 1L, MaxPendingWriteBytes = 1L, Progress = Action<_>(progress.Enqueue)))
            Expect.equal (List.ofSeq sink.Order) (plan.Tensors |> Seq.map (fun t -> t.Name) |> List.ofSeq) "plan order"
            Expect.equal stats.Tensors 10 "all tensors"
            Expect.isLessThanOrEqual stats.PeakPrefetchBytes 24L "one tensor's inputs at a time"
            let last = progress |> Seq.last
            Expect.equal (last.TensorsDone, last.BytesDone) (10, plan.BytesWritten) "progress reaches the end"
        }

        test "an error in the middle of the stream stops the pipeline and propagates" {
            let names = [ for i in 0..5 -> $"t{i}" ]
            let ins = inputs (Some(model "base" [ for n in names -> n, vec [ 1.0 ] ])) [ model "e1" [ for n in names -> n, (if n = "t3" then vec [ nan ] else vec [ 1.0 ]) ] ]
            // The NaN input is caught by the reader thread's input check, mid-stream.
            Expect.throwsC (fun () -> run (Methods.taskArithmetic 1.0) ins |> ignore) (fun e ->
                match e with
                | :? NonFiniteTensorException as n -> Expect.equal (n.Tensor, n.Model) ("t3", "e1") "t3 of e1"
                | e -> failtestf "expected NonFiniteTensorException, got %O" e)
        }

        test "a failing sink or a failing source stops the merge with its error, without hanging" {
            let names = [ for i in 0..7 -> $"t{i}" ]
            let ins = inputs (Some(model "base" [ for n in names -> n, vec [ 1.0 ] ])) [ model "e1" [ for n in names -> n, vec [ 2.0 ] ] ]
            let plan = Compiler.Compile(Methods.taskArithmetic 1.0, ins)
            let failing =
                { new ITensorSink with
                    member _.Write(name, _) = if name = "t2" then raise (System.IO.IOException "disk full") }
            Expect.throwsT<System.IO.IOException> (fun () -> Executor.Run(plan, failing, MergeOptions(MaxPrefetchBytes = 8L)) |> ignore) "sink error"
            let broken =
                { new ITensorSource with
                    member _.Label = "broken"
                    member _.Tensors = ins.Base.Source.Tensors
                    member _.Metadata = ins.Base.Source.Metadata
                    member _.TryGetInfo(name, info) = ins.Base.Source.TryGetInfo(name, &info)
                    member _.Load name = if name = "t5" then raise (System.IO.IOException "read error in t5") else ins.Base.Source.Load name
                    member _.Dispose() = () }
            let plan = Compiler.Compile(Methods.taskArithmetic 1.0, MergeInputs(NamedSource("base", broken), ins.Experts |> Array.ofSeq))
            use sink = new MemorySink()
            Expect.throwsT<System.IO.IOException> (fun () -> Executor.Run(plan, sink, MergeOptions()) |> ignore) "source error"
            Expect.isLessThan sink.Tensors.Count 8 "stopped early"
        }

        test "global top-k statistics are exact over many tensors with heavy ties" {
            // magnitudes from {0.5, 1, 1.5}: thresholds always land on ties
            let rng = Random 11
            let names = [ for i in 0..7 -> $"layers.{i}.w" ]
            let mk label = model label [ for n in names -> n, vec [ for _ in 1..9 -> float (rng.Next(-3, 4)) / 2.0 ] ]
            let b, e1, e2 = mk "base", mk "e1", mk "e2"
            let ins = inputs (Some b) [ e1; e2 ]
            for d in [ 0.1; 0.37; 0.5; 0.9 ] do
                let recipe = Recipe.ofTensor (Recipe.experts |> Recipe.taskVectors |> Recipe.sparsify (Recipe.topKGlobal d) |> Recipe.pick 1)
                let got = run recipe ins
                let want = reference MergeOptions.Default recipe ins
                Expect.equal got want $"density {d}"
                let kept = got |> Map.toSeq |> Seq.sumBy (fun (_, v) -> v |> Array.filter (fun x -> x <> 0.0f) |> Array.length)
                let tvs = names |> List.sumBy (fun n -> Array.map2 (-) (values (e2.Source.Load n)) (values (b.Source.Load n)) |> Array.filter (fun x -> x <> 0.0f) |> Array.length)
                Expect.equal kept (min tvs (int (MergeDsl.Core.Ops.MergeOps.KeepCount(d, 72L)))) $"exactly k kept at density {d}"
        }
    ]
