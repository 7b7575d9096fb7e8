module MergeDsl.Tests.TextScaleTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextScale

let private textInstalled () =
    TextDomains.All |> Seq.forall (fun d -> (TextDocuments.MissingPackages d).Count = 0)

let private point width baseName (experts: string list) method heldIn heldOut =
    TextScalePoint(width, int64 (width * 100), (if baseName = "weak" then 1 else 4), baseName, experts, method,
        0.0, 0.0, heldIn, heldOut, 0.0, readOnlyDict [], 0.0)

let private resultOf points =
    TextScaleResult(points, [], [ "a"; "b"; "c" ], [ "pl" ], "test", true, 1, readOnlyDict [], [])

// Sequenced: some tests run the CLI in-process, and console redirection is process-wide.
[<Tests>]
let tests =
    testSequenced <| testList "TextScale" [
        test "expert order: a seeded permutation of the held-in domains, stable per seed" {
            let experts = [| "en"; "de"; "it"; "es"; "kjv"; "c"; "man" |]
            let a = TextScaleOptions.ExpertOrderOf(experts, 42) |> List.ofSeq
            Expect.equal (List.sort a) (List.sort (List.ofArray experts)) "a permutation"
            Expect.equal (TextScaleOptions.ExpertOrderOf(experts, 42) |> List.ofSeq) a "stable for one seed"
            let others = [ 1..20 ] |> List.map (fun s -> TextScaleOptions.ExpertOrderOf(experts, s) |> List.ofSeq) |> List.distinct
            Expect.isGreaterThan others.Length 10 "seeds give different orders"
        }

        test "summaries average one method's points per group (hand-checked)" {
            let r =
                resultOf [
                    point 32 "weak" [ "a"; "b" ] "TA" 0.90 0.80
                    point 32 "strong" [ "a"; "b" ] "TA" 0.94 0.84
                    point 64 "weak" [ "a"; "b"; "c" ] "TA" 0.96 0.70
                    point 64 "strong" [ "a"; "b"; "c" ] "TA" 1.00 0.74
                    point 64 "strong" [ "a"; "b"; "c" ] "Avg" 0.50 0.50 ]
            let held axis = TextScaleReports.Summary(r, "TA", axis, Func<_, _>(fun p -> p.NormalisedHeldIn)) |> List.ofSeq
            Expect.equal (TextScaleReports.Groups(r, TextScaleReports.Axis.Width) |> List.ofSeq) [ "32"; "64" ] "width groups in run order"
            Expect.sequenceEqual (held TextScaleReports.Axis.Width |> List.map (fun x -> Math.Round(x, 6))) [ 0.92; 0.98 ] "by width: (0.90+0.94)/2, (0.96+1.00)/2"
            Expect.sequenceEqual (held TextScaleReports.Axis.Base |> List.map (fun x -> Math.Round(x, 6))) [ 0.93; 0.97 ] "by base: weak (0.90+0.96)/2, strong (0.94+1.00)/2"
            let out = TextScaleReports.Summary(r, "TA", TextScaleReports.Axis.Experts, Func<_, _>(fun p -> p.NormalisedHeldOut)) |> List.ofSeq
            Expect.sequenceEqual (out |> List.map (fun x -> Math.Round(x, 6))) [ 0.82; 0.72 ] "held-out by expert count"
            let filtered = TextScaleReports.Summary(r, "Avg", TextScaleReports.Axis.Width, Func<_, _>(fun p -> p.NormalisedHeldIn)) |> List.ofSeq
            Expect.isTrue (Double.IsNaN filtered[0]) "a group without the method's points is NaN, not 0"
            Expect.stringContains (TextScaleReports.Markdown r) "| TA | 0.920 | 0.980 |" "Markdown summary row"
        }

        test "settings that cannot run are refused in one line naming the option" {
            let refuse f = try f () |> ignore; "" with :? ArgumentException as e -> e.Message
            let msg = refuse (fun () -> TextScaleOptions.Create("/nonexistent", true, 1, expertCounts = [| 2; 8 |]))
            Expect.stringContains msg "--expert-counts: 8 experts" "names the count"
            let msg = refuse (fun () -> TextScaleOptions.Create("/nonexistent", true, 1, widths = [| 30 |]))
            Expect.stringContains msg "--widths: width 30" "names the width"
            let msg = refuse (fun () -> TextScaleOptions.Create("/nonexistent", true, 1, pretrainSteps = [| 0 |]))
            Expect.stringContains msg "--pretrain-steps" "names the option"
            let msg = refuse (fun () -> TextScaleOptions.Create("/nonexistent", true, 1, methods = Collections.Generic.HashSet<string>([ "DARE" ])))
            Expect.stringContains msg "unknown row 'DARE'" "names the row"
        }

        test "a zoo build lock makes a second builder wait until the first has finished" {
            let dir = TestSupport.tempDir "buildlock"
            let path = Path.Combine(dir, "zoo.lock")
            let first = BuildLock.Acquire path
            let released = ref false
            let waited =
                Threading.Tasks.Task.Run(fun () ->
                    use _ = BuildLock.Acquire path
                    released.Value)
            Threading.Thread.Sleep 700
            Expect.isFalse waited.IsCompleted "the second builder waits while the first holds the lock"
            released.Value <- true
            first.Dispose()
            Expect.isTrue (waited.Wait 10000) "the second builder gets the lock once it is released"
            Expect.isTrue waited.Result "and only after the release"
        }

        test "single-seed reports read back and combine: mean ± std over seeds and paired differences (hand-checked); mismatches refused" {
            // Per seed, TA's normalised held-in: weak 0.90, strong 0.94 (seed 1); weak 0.80, strong 0.90 (seed 2).
            let run seed (weak: float) (strong: float) =
                TextScaleResult(
                    [ point 32 "weak" [ "a"; "b" ] "Pretrained" 0.5 1.0
                      point 32 "weak" [ "a"; "b" ] "TA" weak 0.8
                      point 32 "strong" [ "a"; "b" ] "Pretrained" 0.6 1.0
                      point 32 "strong" [ "a"; "b" ] "TA" strong 0.9 ],
                    [ for steps in [ 1; 4 ] -> TextScaleZoo(32, steps, 3200L, "zoo", true, readOnlyDict []) ],
                    [ "a"; "b"; "c" ], [ "pl" ], "test", false, seed, readOnlyDict [ "widths", "32"; "seed", string seed ], [ struct ("x", 60.0) ])
            let dir = TestSupport.tempDir "scalecombine"
            let write (r: TextScaleResult) =
                let folder = Path.Combine(dir, sprintf "s%d" r.Seed)
                Directory.CreateDirectory folder |> ignore
                TextScaleReports.WriteJson(r, Path.Combine(folder, "results.json"))
                folder
            let s1 = write (run 1 0.90 0.94)
            let s2 = write (run 2 0.80 0.90)
            let back = TextScaleCombine.Read(Path.Combine(s1, "results.json"))
            Expect.equal back.Seed 1 "seed read back"
            Expect.equal back.Points.Count 4 "points read back"
            Expect.equal back.Points[1].NormalisedHeldIn 0.90 "values read back"
            Expect.sequenceEqual back.Points[1].Experts [ "a"; "b" ] "experts read back"
            let runs = TextScaleCombine.Check([ "s1", back; "s2", TextScaleCombine.Read(Path.Combine(s2, "results.json")) ])
            let inBy axis g = TextScaleCombine.Cell(runs, "TA", axis, Func<_, _>(fun p -> p.NormalisedHeldIn), g)
            // Strong base: seeds 0.94 and 0.90, mean 0.92, sample std |0.94 - 0.90| / sqrt 2.
            let struct (mean, std) = inBy TextScaleReports.Axis.Base 1
            Expect.floatClose Accuracy.veryHigh mean 0.92 "mean over seeds"
            Expect.floatClose Accuracy.veryHigh std (0.04 / sqrt 2.0) "sample std over seeds"
            // Width 32 pools both bases per seed first: seed 1 (0.90+0.94)/2 = 0.92, seed 2 0.85.
            let struct (mean, _) = inBy TextScaleReports.Axis.Width 0
            Expect.floatClose Accuracy.veryHigh mean 0.885 "a seed's own group mean, then the mean over seeds"
            // Strong minus weak per seed: 0.04 and 0.10.
            let struct (diff, diffStd, perSeed) = TextScaleCombine.Paired(runs, "TA", TextScaleReports.Axis.Base, Func<_, _>(fun p -> p.NormalisedHeldIn))
            Expect.sequenceEqual (perSeed |> Seq.map (fun (x: float) -> Math.Round(x, 6))) [ 0.04; 0.10 ] "paired per seed"
            Expect.floatClose Accuracy.veryHigh diff 0.07 "mean paired difference"
            Expect.floatClose Accuracy.veryHigh diffStd (0.06 / sqrt 2.0) "its spread"
            let md = TextScaleCombine.Markdown runs
            Expect.stringContains md "| TA | 0.850 ± 0.071 | 0.920 ± 0.028 |" "mean ± std by base: weak (0.90, 0.80), strong (0.94, 0.90)"
            Expect.isFalse (md.Contains "2 − 2") "no comparison along an axis with one group"
            Expect.stringContains md "| base: strong − weak | normalised held-in | TA | +0.070 ± 0.042 | +0.040, +0.100 |" "paired row"
            TestSupport.throwsWith<ArgumentException> (fun () -> TextScaleCombine.Check([ "s1", back; "again", back ]) |> ignore) "seed 1 appears twice" "repeated seed"
            let rebuild seed settings points =
                TextScaleResult(points, back.Zoos, back.ExpertOrder, back.HeldOut, back.Machine, back.Quick, seed, settings, back.Stages)
            let otherWidths = rebuild 3 (readOnlyDict [ "widths", "64"; "seed", "3" ]) back.Points
            TestSupport.throwsWith<ArgumentException> (fun () -> TextScaleCombine.Check([ "s1", back; "w", otherWidths ]) |> ignore) "w was run with other settings" "other settings"
            let fewerRows = rebuild 4 back.Settings (back.Points |> Seq.filter (fun p -> p.Method = "TA") |> Seq.toList)
            TestSupport.throwsWith<ArgumentException> (fun () -> TextScaleCombine.Check([ "s1", back; "r", fewerRows ]) |> ignore) "other configurations or rows" "other rows"
            File.WriteAllText(Path.Combine(dir, "pool.json"), "{\"benchmark\": \"mergedsl bench taskpool\"}")
            TestSupport.throwsWith<InvalidDataException> (fun () -> TextScaleCombine.Read(Path.Combine(dir, "pool.json")) |> ignore) "not a scale-study report" "another benchmark's report"
            let out = Path.Combine(dir, "out")
            let code, _, err = CliHarness.mergedsl [ "bench"; "textscale"; "--combine"; s1 + "," + Path.Combine(dir, "missing"); "--out"; out ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "missing" "names the report"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            Expect.isFalse (Directory.Exists out) "nothing written"
            let before = File.ReadAllText(Path.Combine(s1, "results.json"))
            let code, _, err = CliHarness.mergedsl [ "bench"; "textscale"; "--combine"; s1 + "," + s2; "--out"; s1 ]
            Expect.equal code 2 "--out at an input's folder is refused"
            Expect.stringContains err "--out" "names the option"
            Expect.equal (File.ReadAllText(Path.Combine(s1, "results.json"))) before "the input report is untouched"
            let code, stdout, _ = CliHarness.mergedsl [ "bench"; "textscale"; "--combine"; s1 + "," + s2; "--out"; out ]
            Expect.equal code 0 (sprintf "combined through the CLI: %s" stdout)
            let json = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
            let strongMean = json.["summaries"].["base"].["normalised held-in"].["TA"].["strong"].["mean"]
            Expect.equal (strongMean.GetValue<float>()) 0.92 "JSON mean"
            Expect.isGreaterThan (FileInfo(Path.Combine(out, "scale-width-held-in.png")).Length) 100L "plots written"
            Directory.Delete(dir, true)
        }

        test "bench textscale refuses a bad expert count with exit 2 and one line" {
            let code, _, err = CliHarness.mergedsl [ "bench"; "textscale"; "--quick"; "--expert-counts"; "2,x" ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "--expert-counts: 'x' is not a whole number" "names the value"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
        }
    ]

/// The --quick study end to end (its zoos are the quick text pool's size: a minute or two on 2 cores the first time).
[<Tests>]
let quickStudy =
    testSequenced <| testList "TextScale quick" [
        test "bench textscale --quick: every width, base and expert count; references, validation choices and reports" {
            if not (textInstalled ()) then
                skiptestf "text packages not installed; run: %s" TextCorpus.InstallCommand
            let out = Path.Combine(Path.GetTempPath(), "mergedsl-textscale-" + Guid.NewGuid().ToString("N"))
            let options = TextScaleOptions.Create(DataStore.DefaultRoot(), true, 42)
            let r = MergeDsl.Cli.Commands.Textscale.executeWith out options
            for f in MergeDsl.Cli.Commands.Textscale.reportFiles do
                Expect.isGreaterThan (FileInfo(Path.Combine(out, f)).Length) 100L (f + " written")
            Expect.equal (List.ofSeq r.Methods)
                [ "Pretrained"; "Individual"; "Simple Average"; "Task Arithmetic"; "TIES-Merging"; "WEMoE" ]
                "rows"
            let configs = r.Points |> Seq.map (fun p -> p.Width, p.Base, p.Experts.Count) |> Seq.distinct |> List.ofSeq
            Expect.equal configs.Length (2 * 2 * 2) "2 widths x 2 bases x 2 expert counts"
            Expect.equal r.Zoos.Count 4 "one zoo per width and base"
            Expect.isGreaterThan r.Zoos[2].Parameters r.Zoos[0].Parameters "the wider zoo has more parameters"
            for p in r.Points do
                // Subsets are prefixes of the seeded order.
                Expect.sequenceEqual p.Experts (r.ExpertOrder |> Seq.take p.Experts.Count) "nested subsets"
                Expect.isTrue (Double.IsFinite p.NormalisedHeldIn && p.NormalisedHeldIn > 0.0) p.Method
                if p.Method = "Individual" then
                    Expect.floatClose Accuracy.veryHigh p.NormalisedHeldIn 1.0 "the experts are held-in's reference"
                    Expect.floatClose Accuracy.veryHigh p.NormalisedHeldOut 1.0 "the best expert is held-out's reference"
            // The falsifiable part: each expert beats the base on its own domain, so the base scores below 1.
            for p in r.Points |> Seq.filter (fun p -> p.Method = "Pretrained") do
                Expect.isLessThan p.NormalisedHeldIn 1.0 (sprintf "base below the experts at width %d, %s base" p.Width p.Base)
            // WEMoE starts at the λ task arithmetic chose on validation for the same configuration.
            for ta in r.Points |> Seq.filter (fun p -> p.Method = "Task Arithmetic") do
                let wemoe = r.Points |> Seq.find (fun p -> p.Method = "WEMoE" && p.Width = ta.Width && p.Base = ta.Base && p.Experts.Count = ta.Experts.Count)
                Expect.equal wemoe.Chosen["lambda"] ta.Chosen["lambda"] "WEMoE's λ is task arithmetic's choice"
                Expect.equal wemoe.Chosen["objective"] "entropy" "the headline WEMoE row is the paper's objective"
            let json = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
            Expect.equal ((json["points"]).AsArray().Count) r.Points.Count "every point in the JSON"
            Expect.equal (File.ReadAllBytes(Path.Combine(out, "scale-width-held-in.png"))[1..3]) "PNG"B "PNG signature"
            Directory.Delete(out, true)
        }
    ]
