module MergeDsl.Tests.CliBenchTests

open System
open System.IO
open Expecto
open MergeDsl.Core.Memory
open MergeDsl.Bench.Streaming
open MergeDsl.Core.Checkpoints

[<Tests>]
let tests =
    testSequenced
    <| testList "CliBench" [
        test "bench taskpool: an unknown --methods name or --objective fails in one line, exit 2, before any work" {
            let dir = Path.Combine(CliTests.scratch.Value, "taskpool-bad-args")
            let code, _, err = CliHarness.mergedsl [ "bench"; "taskpool"; "--methods"; "WEMoE,Magic"; "--data"; dir; "--out"; dir ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "--methods: unknown method(s) Magic" "names the bad method"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            let code, _, err = CliHarness.mergedsl [ "bench"; "taskpool"; "--objective"; "accuracy"; "--data"; dir; "--out"; dir ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "--objective: expected entropy, entropy-diversity, distillation or supervised, got 'accuracy'" "names the bad objective"
            for opt, value, msg in [ "--objective", "supervised", "--objective: supervised reads the test labels"
                                     "--wemoe-lr", "-1", "--wemoe-lr: expected a positive number, got -1"
                                     "--wemoe-batch", "0", "--wemoe-batch: expected a positive count, got 0"
                                     "--diversity", "-0.5", "--diversity: expected a finite number ≥ 0, got -0.5" ] do
                let code, _, err = CliHarness.mergedsl [ "bench"; "taskpool"; opt; value; "--data"; dir; "--out"; dir ]
                Expect.equal code 2 $"{opt} usage error"
                Expect.stringContains err msg opt
            Expect.isFalse (Directory.Exists dir) "nothing written"
        }
        test "synthetic zoo: layout, determinism, small dense task vectors, reuse" {
            let dir = Path.Combine(CliTests.scratch.Value, "bench-zoo")
            // 3 rows of a 1024-wide matrix per model: one full 2-row matrix and a 1-row remainder.
            let spec = SyntheticZooSpec(3L * 1024L * 4L, 2, Columns = 1024, MaxRows = 2)
            let zoo = SyntheticCheckpoints.Ensure(dir, spec)
            Expect.isFalse zoo.Reused "first time written"
            use b = Checkpoint.Open zoo.Base
            use e = Checkpoint.Open zoo.Experts[1]
            Expect.equal [ for t in b.Tensors -> t.Name, List.ofArray t.Shape ]
                [ "layers.0.weight", [ 2L; 1024L ]; "layers.0.bias", [ 1024L ]; "layers.1.weight", [ 1L; 1024L ]; "layers.1.bias", [ 1024L ] ]
                "layout"
            use x = b.Load "layers.0.weight"
            use y = e.Load "layers.0.weight"
            let d = (y - x).abs()
            Expect.isLessThanOrEqual (d.max().item<float32>()) 0.005f "expert = base + noise in [-0.005, 0.005)"
            Expect.isGreaterThan (d.mean().item<float32>()) 0.001f "noise is dense"
            Expect.isLessThanOrEqual (x.abs().max().item<float32>()) 0.05f "base in [-0.05, 0.05)"
            let again = SyntheticCheckpoints.Ensure(dir, spec)
            Expect.isTrue again.Reused "same spec reused"
            let other = Path.Combine(CliTests.scratch.Value, "bench-zoo-2")
            let twin = SyntheticCheckpoints.Ensure(other, spec)
            Expect.equal (File.ReadAllBytes(twin.Files()[2])) (File.ReadAllBytes(zoo.Files()[2])) "deterministic"
        }

        test "copy floor reads every input byte once and writes one model" {
            let dir = Path.Combine(CliTests.scratch.Value, "bench-zoo")
            let zoo = SyntheticCheckpoints.Ensure(dir, SyntheticZooSpec(3L * 1024L * 4L, 2, Columns = 1024, MaxRows = 2))
            let files = zoo.Files()
            let out = Path.Combine(CliTests.scratch.Value, "floor", "model.safetensors")
            let r = CopyFloor.Run(files, out)
            Expect.equal r.BytesRead (files |> Seq.sumBy (fun f -> FileInfo(f).Length)) "every byte read"
            Expect.equal r.BytesWritten (FileInfo(files[0]).Length) "one model written"
            Expect.equal (File.ReadAllBytes out) (File.ReadAllBytes files[0]) "a copy of the base"
            Expect.isGreaterThan r.Seconds 0.0 "timed"
        }

        test "merge step runs the real merge and cleans up" {
            let dir = Path.Combine(CliTests.scratch.Value, "bench-zoo")
            let zoo = SyntheticCheckpoints.Ensure(dir, SyntheticZooSpec(3L * 1024L * 4L, 2, Columns = 1024, MaxRows = 2))
            for m in [ "task-arithmetic"; "ties" ] do
                let r = MergeDsl.Cli.Commands.Bench.runStep "merge" dir 2 m
                use b = Checkpoint.Open zoo.Base
                Expect.equal r.BytesRead (3L * b.TotalBytes) $"{m}: base + 2 experts read once"
                Expect.isGreaterThanOrEqual r.BytesWritten b.TotalBytes $"{m}: one model written"
                Expect.isGreaterThan r.PeakRssBytes 0L "peak RSS measured"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "out-merge"))) "output removed"
        }

        test "resident-set figures are read from /proc on Linux" {
            if OperatingSystem.IsLinux() then
                Expect.isGreaterThan (PeakMemory.CurrentAnonymousBytes()) 0L "RssAnon"
                Expect.isGreaterThan (PeakMemory.CurrentFileBackedBytes()) 0L "RssFile"
                let now = PeakMemory.CurrentResidentBytes() // read first: the peak can only grow after it
                Expect.isGreaterThanOrEqual (PeakMemory.PeakResidentBytes()) now "VmHWM >= VmRSS"
                use s = new ResidentSampler()
                Expect.isGreaterThan s.PeakAnonymousBytes 0L "sampler"
        }
    ]
