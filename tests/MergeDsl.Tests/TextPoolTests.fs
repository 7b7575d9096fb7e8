module MergeDsl.Tests.TextPoolTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextPool
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers

let private tinyConfig () =
    TextZooSettings(Width = 16, Layers = 1, Heads = 2, Context = 8).ModelConfig()

/// True when every domain's Debian packages are installed (CI installs them through scripts/install-data.sh).
let private textInstalled () =
    TextDomains.All |> Seq.forall (fun d -> (TextDocuments.MissingPackages d).Count = 0)

[<Tests>]
let tests =
    testList "TextPool" [
        test "fortune files split at lines holding only %, entries trimmed, empty ones dropped" {
            let entries = TextDocuments.SplitFortunes "a\n%\nb\nc\n%\n\n%\n  d \n" |> List.ofSeq
            Expect.equal entries [ "a"; "b\nc"; "d" ] "entries"
            Expect.equal (TextDocuments.SplitFortunes "%\n%\n" |> List.ofSeq) [] "only separators"
        }

        test "consecutive windows predict every byte after the first exactly once" {
            let text = Array.init 10 byte
            let ws = ByteWindows.Consecutive(text, 4) |> List.ofSeq
            Expect.equal (ws |> List.map Array.length) [ 5; 5; 2 ] "window lengths (context + 1, last shorter)"
            Expect.equal ws[1] [| 4L; 5L; 6L; 7L; 8L |] "second window starts where the first one's predictions end"
            Expect.equal (ws |> List.sumBy (fun w -> w.Length - 1)) 9 "bytes predicted"
        }

        test "a model with a zero LM head scores log2(258) bits per byte and predicts byte 0 (hand-checked)" {
            use _ = torch.NewDisposeScope()
            use model = DecoderModelFolder.Random(tinyConfig (), 1L)
            use __ = torch.no_grad ()
            (model.ParametersByName()["lm_head.weight"]).zero_() |> ignore
            let text = Encoding.UTF8.GetBytes "hello, world: twenty-one"
            let s = TextScore.Of(model, text, 8, 2)
            // float32 log-softmax: equal to log2(258) within float precision.
            Expect.floatClose { absolute = 1e-5; relative = 1e-6 } s.BitsPerByte (Math.Log2 258.0) "uniform over 258 ids"
            Expect.equal s.Accuracy 0.0 "argmax of equal logits is id 0, which the text lacks"
            Expect.equal s.Bytes (int64 (text.Length - 1)) "every byte after the first"
        }

        test "document positions are stable and spread over [0, 1)" {
            let ps = [ for i in 0..999 -> TextCorpus.HashPosition("en", $"doc{i}") ]
            Expect.isTrue (ps |> List.forall (fun p -> p >= 0.0 && p < 1.0)) "in range"
            Expect.equal (TextCorpus.HashPosition("en", "doc7")) ps[7] "stable"
            let test = ps |> List.filter (fun p -> p < TextCorpus.TestFraction) |> List.length
            Expect.isTrue (test > 60 && test < 140) (sprintf "about 10%% in test, got %d" test)
        }

        test "the zoo hash follows the settings and the data" {
            let data = [ TextSplitInfo("en", readOnlyDict [], 1, [ 1; 1; 1 ], [ 1; 1; 1 ], "aa") ]
            let s = TextZooSettings()
            Expect.equal (s.Hash data) (TextZooSettings().Hash data) "same settings, same hash"
            Expect.notEqual (s.Hash data) (TextZooSettings(Width = 128).Hash data) "width"
            Expect.notEqual (s.Hash data) (TextZooSettings(PretrainSteps = 7).Hash data) "pretraining"
            Expect.notEqual (s.Hash data) (s.Hash [ TextSplitInfo("en", readOnlyDict [], 1, [ 1; 1; 1 ], [ 1; 1; 1 ], "bb") ]) "data"
        }

        test "settings naming a held-out domain as an expert, or a bad width, are refused in one line" {
            let msg = try TextPoolOptions.Create("/nonexistent", true, [ 1 ], null, TextPoolOverrides(Experts = [| "en"; "pl" |])) |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains msg "'pl' is held out" "names the domain"
            let msg = try TextPoolOptions.Create("/nonexistent", true, [ 1 ], null, TextPoolOverrides(Width = 30)) |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains msg "width 30" "names the width"
            Expect.throwsT<ArgumentException> (fun () -> TextPoolOptions.Create("/nonexistent", true, [ 1; 1 ], null) |> ignore) "repeated seed"
        }
    ]

/// The --quick pool end to end (trains the quick zoo on first run: about a minute on 2 cores).
[<Tests>]
let quickPool =
    testSequenced <| testList "TextPool quick" [
        test "bench textpool refuses an unknown domain with exit 2 and one line" {
            let code, _, err = CliHarness.mergedsl [ "bench"; "textpool"; "--quick"; "--experts"; "en,xx" ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "unknown text domain 'xx'" "names the domain"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
        }

        test "bench textpool --quick: reports, validation-chosen settings, experts beat the base on their own text" {
            if not (textInstalled ()) then
                skiptestf "text packages not installed; run: %s" TextCorpus.InstallCommand
            let root = DataStore.DefaultRoot()
            let out = Path.Combine(Path.GetTempPath(), "mergedsl-textpool-" + Guid.NewGuid().ToString("N"))
            let options = TextPoolOptions.Create(root, true, [ 42 ])
            let r = MergeDsl.Cli.Commands.Textpool.executeWith out options
            for f in [ "results.json"; "results.md"; "results.png" ] do
                Expect.isGreaterThan (FileInfo(Path.Combine(out, f)).Length) 100L (f + " written")
            Expect.equal (File.ReadAllBytes(Path.Combine(out, "results.png"))[1..3]) "PNG"B "PNG signature"
            Expect.equal (List.ofSeq r.Methods)
                [ "Pretrained"; "Individual"; "Simple Average"; "Task Arithmetic"; "TIES-Merging"; "DARE-TIES"
                  "AdaMerging (task-wise)"; "AdaMerging (layer-wise)"; "WEMoE"; "WEMoE (expert distillation, ours)"; "E-WEMoE"; "SMILE"; "Oracle routing" ]
                "rows"
            let run = r.Runs[0]
            let domains = List.ofSeq r.Domains
            Expect.equal (domains |> List.filter (fun d -> not d.HeldOut) |> List.length) 7 "seven held-in domains"
            Expect.equal (domains |> List.filter (fun d -> d.HeldOut) |> List.map (fun d -> d.Name)) [ "pl"; "cs" ] "held-out domains"
            // The falsifiable claim: fine-tuning on a domain lowers bits per byte on that domain's unseen test text.
            let pre = run.Find "Pretrained"
            let ind = run.Find "Individual"
            for j, d in List.indexed domains do
                if not d.HeldOut then
                    Expect.isLessThan (ind.Scores[j].BitsPerByte) (pre.Scores[j].BitsPerByte) (sprintf "expert %s beats the base on %s test text" d.Name d.Name)
            for m in r.Methods do
                for s in run.Find(m).Scores do
                    Expect.isTrue (s.BitsPerByte > 0.0 && s.BitsPerByte < 16.0 && s.Accuracy >= 0.0 && s.Accuracy <= 1.0) m
            // Selection: the chosen setting is the one with the lowest validation score, from the grid.
            let ta = run.Find "Task Arithmetic"
            Expect.equal ta.Validation.Count 2 "both λ tried on validation"
            let best = ta.Validation |> Seq.minBy (fun kv -> kv.Value)
            Expect.equal best.Key ("lambda=" + ta.Chosen["lambda"]) "chosen = lowest validation bits per byte"
            // The dynamic rows choose on validation too (SMILE's rank, in the quick grid) and report what they fixed.
            let smile = run.Find "SMILE"
            Expect.equal smile.Validation.Count 2 "both SMILE ranks tried on validation"
            let bestSmile = smile.Validation |> Seq.minBy (fun kv -> kv.Value)
            Expect.stringContains bestSmile.Key ("rank=" + smile.Chosen["rank"]) "SMILE: chosen = lowest validation bits per byte"
            Expect.equal ((run.Find "WEMoE").Chosen["objective"]) "entropy" "the headline WEMoE row is the paper's label-free objective"
            Expect.equal ((run.Find "WEMoE (expert distillation, ours)").Chosen["objective"]) "distillation" "ours, labelled"
            let json = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
            let report = (json["methods"]).["Individual"].["report"]
            let field (col: string) (name: string) = (report.[col]).[name]
            for d in domains do
                Expect.isNotNull (field d.Name "bits_per_byte") d.Name
            Expect.isNotNull (field "average_held_in" "next_byte_accuracy") "held-in average"
            Expect.isNotNull (field "average_held_out" "bits_per_byte") "held-out average"
            let heldOut = (json["domains"]["held_out"]).AsArray()
            Expect.equal heldOut.Count 2 "held-out list"
            let stages = (json["stage_seconds"]).AsArray()
            Expect.isGreaterThan stages.Count 0 "stage times"
            // The zoo is Hugging Face folders with a byte-level tokenizer.json, and a second build reuses it.
            let struct (m, tok) = DecoderModelFolder.LoadWithTokenizer(Path.Combine(run.ZooFolder, "experts", "de"))
            m.Dispose()
            Expect.isTrue (tok :? ByteTokenizer) "byte tokenizer read back from tokenizer.json"
            let data = TextPoolBenchmark.LoadData(root, r.Domains, options.Zoo.Sizes)
            let again = TextZooBuilder.Build(options.Zoo, data, Path.Combine(root, "textzoo"))
            Expect.isTrue again.FromCache "cached by the settings and data hash"
            Expect.equal again.Folder run.ZooFolder "same folder"
            Directory.Delete(out, true)
        }
    ]
