/// `mergedsl demo`: the sentence it computes from a run's numbers (hand-checked), and the quick demo's output.
module MergeDsl.Tests.DemoTests

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open MergeDsl.Bench.Data
open MergeDsl.Bench.Demo
open MergeDsl.Bench.TaskPool

/// A result with the demo's rows, two tasks, and the given per-task accuracies of TA, WEMoE and Individual.
let private result (ta: float list) (wemoe: float list) (individual: float list) =
    let row name acc = MethodResult(name, List<float>(acc: float seq), 1.0, Dictionary<string, string>())
    let rows =
        [ row "Pretrained" [ 10.0; 20.0 ]; row "Individual" individual; row "Simple Average" [ 40.0; 40.0 ]
          row "Task Arithmetic" ta; row "TIES-Merging" [ 50.0; 50.0 ]; row "WEMoE" wemoe ]
    BenchmarkResult([ "a"; "b" ], [ SeedRun(42, rows, [], "zoo", true, Dictionary<string, double>()) ], "test machine", false, Dictionary<string, string>())

[<Tests>]
let headline =
    testList "Demo headline" [
        test "the share of the TA-to-Individual gap that WEMoE recovers, from the averages" {
            // TA 60, Individual 80, WEMoE 75: (75 - 60) / (80 - 60) = 75%.
            let r = result [ 50.0; 70.0 ] [ 70.0; 80.0 ] [ 75.0; 85.0 ]
            Expect.equal (TaskPoolDemo.Headline r)
                "WEMoE recovers 75% of the gap Task Arithmetic leaves to the individual experts, with one model for all tasks (average accuracy over 2 tasks: Task Arithmetic 60.0, WEMoE 75.0, Individual 80.0)."
                "sentence"
        }
        test "WEMoE below TA is said so; no gap is said so" {
            let worse = result [ 60.0; 60.0 ] [ 57.0; 58.0 ] [ 80.0; 80.0 ]
            Expect.stringStarts (TaskPoolDemo.Headline worse) "WEMoE ends 2.5 points below Task Arithmetic" "negative"
            let none = result [ 80.0; 80.0 ] [ 81.0; 81.0 ] [ 80.2; 80.2 ]
            Expect.stringStarts (TaskPoolDemo.Headline none) "Task Arithmetic leaves no gap" "no gap"
        }
        test "a result without a row the sentence needs is refused, naming it" {
            let r = BenchmarkResult([ "a" ], [ SeedRun(42, [], [], "zoo", true, Dictionary<string, double>()) ], "m", false, Dictionary<string, string>())
            let e = Expect.throwsT<ArgumentException> (fun () -> TaskPoolDemo.Headline r |> ignore)
            ignore e
        }
        test "the demo's rows are the benchmark's, in its order" {
            let order = TaskPoolBenchmark.MethodOrder |> Array.filter (fun m -> Seq.contains m TaskPoolDemo.Methods)
            Expect.sequenceEqual order TaskPoolDemo.Methods "known names, table order"
        }
    ]

/// The quick demo end to end (uses the quick zoo, trained on first use and cached; the group keeps the tests that
/// may train it from doing so at the same time).
[<Tests>]
let quickDemo =
    testSequencedGroup "quick task-pool zoo" <| testList "Demo quick run" [
        test "demo --quick prints the table of every task and row, a sentence from its numbers, and a PNG plot" {
            let root = DataStore.DefaultRoot()
            let s = DataStore(root)
            if not (s.IsAvailable TaskSource.Digits && s.IsAvailable TaskSource.Fashion) then
                skiptestf "data not installed; run: %s" DataStore.InstallCommand
            let out = Path.Combine(Path.GetTempPath(), "mergedsl-demo-" + Guid.NewGuid().ToString("N"))
            try
                let code, text, err = MergeDsl.Tests.CliHarness.mergedsl [ "demo"; "--quick"; "--out"; out ]
                Expect.equal code 0 $"exit 0 ({err})"
                let lines = text.Split('\n') |> Array.map (fun l -> l.TrimEnd())
                let header = lines |> Array.find (fun l -> l.Contains "task (accuracy %)")
                let columns = header.Split('│', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
                Expect.sequenceEqual columns [| "task (accuracy %)"; "Pretrained"; "Individual"; "Average"; "TA"; "TIES"; "WEMoE" |] "columns"
                let numbers (label: string) =
                    let row = lines |> Array.find (fun l -> l.StartsWith("│ " + label + " "))
                    let cells = row.Split('│', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
                    cells[1..] |> Array.map (fun c -> Double.Parse(c, Globalization.CultureInfo.InvariantCulture))
                for task in TaskPoolTasks.All do
                    let row = numbers task.Name
                    Expect.equal row.Length 6 task.Name
                    Expect.all row (fun a -> a >= 0.0 && a <= 100.0) "accuracies in [0, 100]"
                // The sentence quotes the report's own averages.
                use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
                let avg (m: string) =
                    100.0 * doc.RootElement.GetProperty("methods").GetProperty(m).GetProperty("report").GetProperty("average").GetProperty("accuracy").GetDouble()
                let printedAverages = numbers "average"
                Expect.floatClose Accuracy.low printedAverages[3] (Math.Round(avg "Task Arithmetic", 1)) "TA average in the table"
                let sentence = lines |> Array.find (fun l -> l.StartsWith "WEMoE recovers" || l.StartsWith "WEMoE ends" || l.StartsWith "Task Arithmetic leaves")
                let f (v: float) = v.ToString("F1", Globalization.CultureInfo.InvariantCulture)
                let ta, wemoe, individual = f (avg "Task Arithmetic"), f (avg "WEMoE"), f (avg "Individual")
                Expect.stringContains sentence $"Task Arithmetic {ta}, WEMoE {wemoe}, Individual {individual}" "numbers of this run"
                let plot = lines |> Array.find (fun l -> l.StartsWith "Plot: ")
                let png = Regex.Match(plot, @"^Plot: (\S+\.png)").Groups[1].Value
                let bytes = File.ReadAllBytes png
                Expect.equal bytes[1..3] "PNG"B "a PNG at the printed path"
                Expect.stringContains text "--quick" "says which setting ran"
            finally
                if Directory.Exists out then Directory.Delete(out, true)
        }
    ]
