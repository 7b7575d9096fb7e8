/// The text pool's dynamic rows on a tiny synthetic zoo (no Debian packages needed): oracle routing reproduces each
/// expert, the adapted WEMoE model is causal per token, every row builds a finite model, and `eval --text-data`
/// scores decoder MoE folders.
module MergeDsl.Tests.TextPoolRowsTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextPool
open MergeDsl.Core.Adaptation
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe

let private experts = [ "en"; "de"; "it" ]

let private config () =
    TextZooSettings(Width = 16, Layers = 2, Heads = 2, Context = 16).ModelConfig()

/// Pseudo-text of one domain: bytes from a domain-specific alphabet, seeded.
let private text (seed: int) (length: int) =
    let rng = Random(seed)
    let alphabet = Encoding.ASCII.GetBytes(if seed % 2 = 0 then "abcdefgh ." else "stuvwxyz ,")
    Array.init length (fun _ -> alphabet[rng.Next alphabet.Length])

/// A base and one expert per domain whose weights differ from the base in the decoder MLPs only.
let private zoo () =
    let root = Path.Combine(Path.GetTempPath(), "mergedsl-textrows-" + Guid.NewGuid().ToString("N"))
    let files = DecoderModelFolder.ByteTokenizerFiles()
    use _ = torch.NewDisposeScope()
    use baseModel = DecoderModelFolder.Random(config (), 5L, 0.2)
    DecoderModelFolder.Save(Path.Combine(root, "base"), baseModel, files)
    for i, e in List.indexed experts do
        use m = DecoderModelFolder.Random(config (), 5L, 0.2)
        use __ = torch.no_grad ()
        let g = new torch.Generator(uint64 (100 + i))
        for KeyValue(name, p) in m.ParametersByName() do
            if name.Contains ".mlp." then
                let noise: torch.Tensor = torch.randn(p.shape, generator = g)
                let scale: torch.Tensor = torch.tensor 0.3f
                p.add_(noise * scale) |> ignore
        DecoderModelFolder.Save(Path.Combine(root, e), m, files)
    let data =
        [ for i, d in List.indexed (experts @ [ "pl" ]) ->
              let info = TextSplitInfo(d, readOnlyDict [], 1, [ 1; 1; 1 ], [ 1; 1; 1 ], "x")
              d, TextSplits(TextDomains.ByName d, text (10 + i) 256, text (20 + i) 96, text (30 + i) 96, info) ]
        |> readOnlyDict
    let inputs = TextRowInputs(Path.Combine(root, "base"), experts |> List.map (fun e -> Path.Combine(root, e)) |> List.toArray, List.toArray experts, data, 42)
    root, inputs

let private score (m: DecoderModel) (bytes: byte[]) = (TextScore.Of(m, bytes, 16, 4)).BitsPerByte

[<Tests>]
let tests =
    testSequenced <| testList "TextPool rows" [
        test "oracle routing on a held-in domain scores as that domain's expert (experts differ only in their MLPs)" {
            let root, inputs = zoo ()
            try
                let row = OracleRoutingTextRow([ 0.3 ])
                use model = row.Build(inputs, row.Grid[0])
                for e in experts do
                    use expert = DecoderModelFolder.Load(Path.Combine(root, e))
                    let t = inputs.Data[e].Test
                    row.ForDomain(model, inputs, e)
                    Expect.floatClose { absolute = 1e-4; relative = 1e-4 } (score model t) (score expert t) (sprintf "oracle = expert %s" e)
                // The check can fail: routed to another expert, the score on the same text is another expert's.
                OracleRoutingTextRow.Route(model, 1)
                use en = DecoderModelFolder.Load(Path.Combine(root, "en"))
                let t = inputs.Data["en"].Test
                Expect.isGreaterThan (abs (score model t - score en t)) 1e-3 "routing to de is not the en expert"
                // Held out: the expert whose route is best on the domain's validation text.
                row.ForDomain(model, inputs, "pl")
                let chosen = score model inputs.Data["pl"].Validation
                for i in 0 .. experts.Length - 1 do
                    OracleRoutingTextRow.Route(model, i)
                    Expect.isLessThanOrEqual chosen (score model inputs.Data["pl"].Validation + 1e-9) (sprintf "no better route than the chosen one (%d)" i)
            finally
                Directory.Delete(root, true)
        }

        test "the adapted WEMoE row's model is causal per token: changing byte t+1 never changes the prediction at t" {
            let root, inputs = zoo ()
            try
                let row = WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Entropy, 3, 2, [ 0.3 ], [ 1e-2 ])
                use model = row.Build(inputs, row.Grid[0])
                Expect.isGreaterThan (model.modules() |> Seq.filter (fun m -> m :? WeightEnsemblingSwiGlu) |> Seq.length) 0 "WEMoE MLPs"
                use _ = torch.NewDisposeScope()
                use __ = torch.no_grad ()
                let ids = Array.init 12 (fun i -> int64 (97 + i))
                let changed = Array.copy ids
                changed[7] <- 200L
                let a = model.Forward(torch.tensor(ids).reshape(1L, 12L))
                let b = model.Forward(torch.tensor(changed).reshape(1L, 12L))
                let diff = (a - b).abs().amax([| 2L |]).squeeze(0).data<float32>().ToArray()
                for t in 0..6 do
                    Expect.equal diff[t] 0.0f (sprintf "position %d does not see position 7" t)
                Expect.isGreaterThan diff[7] 1e-6f "position 7 sees its own change"
            finally
                Directory.Delete(root, true)
        }

        test "every dynamic row builds a model with finite bits per byte; distillation and AdaMerging run their steps" {
            let root, inputs = zoo ()
            try
                let rows: ITextRowProducer list =
                    [ AdaMergingTextRow(AdaMergingGranularity.TaskWise, 2, 2, [ 0.3 ], [ 1e-2 ])
                      AdaMergingTextRow(AdaMergingGranularity.LayerWise, 2, 2, [ 0.3 ], [ 1e-2 ])
                      WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Distillation, 2, 2, [ 0.3 ], [ 1e-3 ])
                      WeMoETextRow(MoeKind.EWeMoE, AdaptObjective.Entropy, 2, 2, [ 0.3 ], [ 1e-3 ])
                      SmileTextRow([ 2.0 ], [ 0.3 ]) ]
                for row in rows do
                    use m = row.Build(inputs, row.Grid[0])
                    let s = score m inputs.Data["de"].Test
                    Expect.isTrue (Double.IsFinite s && s > 0.0 && s < 16.0) (sprintf "%s: %f" row.Method s)
                Expect.stringContains ((rows[2]).Fixed["uses"]) "domain identity" "the distillation row says what it uses"
                Expect.equal (DynamicTextRows.Full() |> Seq.map (fun r -> r.Method) |> List.ofSeq)
                    [ "AdaMerging (task-wise)"; "AdaMerging (layer-wise)"; "WEMoE"; "WEMoE (expert distillation, ours)"; "E-WEMoE"; "SMILE"; "Oracle routing" ]
                    "rows in table order"
            finally
                Directory.Delete(root, true)
        }

        test "eval --text-data scores an upscaled decoder folder: bits per byte per task, as TextEvaluation computes it" {
            let root, inputs = zoo ()
            try
                let moe = Path.Combine(root, "moe")
                DecoderUpscaleJob.Run(inputs.BaseFolder, inputs.ExpertFolders, moe, UpscaleSpec(Modules = [| "*.mlp" |])) |> ignore
                let textDir = Path.Combine(root, "text")
                Directory.CreateDirectory textDir |> ignore
                File.WriteAllBytes(Path.Combine(textDir, "en.txt"), inputs.Data["en"].Test)
                File.WriteAllBytes(Path.Combine(textDir, "de.txt"), inputs.Data["de"].Test)
                let code, out, err = CliHarness.mergedsl [ "eval"; moe; "--text-data"; textDir; "--json"; "-" ]
                Expect.equal code 0 err
                let json = JsonNode.Parse out
                Expect.equal (json["kind"].GetValue<string>()) "decoder-moe" "kind"
                use m = DecoderModelFolder.Load moe
                // Windows of 17 bytes overlapping by one byte: the same cut as the pool's, so the numbers agree.
                let expected = score m inputs.Data["en"].Test * float (inputs.Data["en"].Test.Length - 1) / float inputs.Data["en"].Test.Length
                let enBpb = json.["tasks"].["en"].["bits_per_byte"].GetValue<float>()
                Expect.floatClose { absolute = 1e-4; relative = 1e-4 } enBpb expected "en bits per byte"
                let deTokens = json.["tasks"].["de"].["tokens_predicted"].GetValue<int64>()
                Expect.equal deTokens 95L "every byte after the first"
                // One-line errors.
                let code, _, err = CliHarness.mergedsl [ "eval"; moe; "--text-data"; Path.Combine(root, "nope") ]
                Expect.equal code 2 "missing folder"
                Expect.stringContains err "no such folder" "names the problem"
                Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
                let code, _, err = CliHarness.mergedsl [ "eval"; moe; "--text-data"; textDir; "--data"; textDir ]
                Expect.equal code 2 "both"
                Expect.stringContains err "not both" "names the conflict"
                File.WriteAllBytes(Path.Combine(textDir, "bad.txt"), [| 0xffuy; 0xfeuy |])
                let code, _, err = CliHarness.mergedsl [ "eval"; moe; "--text-data"; textDir ]
                Expect.equal code 2 "not UTF-8"
                Expect.stringContains err "bad.txt" "names the file"
            finally
                Directory.Delete(root, true)
        }
    ]
