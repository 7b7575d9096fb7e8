/// MC-SMoE (routing-guided grouping, neuron alignment by linear assignment, usage-weighted merging, low-rank
/// compression) and SCMoE self-contrast: golden tests on hand-checked numbers.
module MergeDsl.Tests.MoeCompressTests

open System
open Expecto
open TorchSharp
open MergeDsl.Core.Moe.Sparse.Compression
open MergeDsl.Core.Moe.Sparse.Contrast

let private matrix (rows: float list list) = array2D rows

let private tensor2 (rows: float32 list list) =
    let r = rows.Length
    let c = rows.Head.Length
    torch.tensor(rows |> List.concat |> Array.ofList).reshape(int64 r, int64 c)

let private values (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).contiguous().data<float>().ToArray()

let private randomExpert (seed: int64) (inter: int64) (hidden: int64) =
    use _ = torch.random.manual_seed seed
    ExpertWeights(torch.randn(inter, hidden), torch.randn(inter, hidden), torch.randn(hidden, inter))

/// Same shape and every entry equal (bit for bit, up to ±0).
let private eqT (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && a.eq(b).all().item<bool>()

let private sameExpert (a: ExpertWeights) (b: ExpertWeights) =
    eqT a.Gate b.Gate && eqT a.Up b.Up && eqT a.Down b.Down

let rec private permutations (xs: int list) =
    match xs with
    | [] -> [ [] ]
    | _ -> [ for x in xs do for rest in permutations (List.filter ((<>) x) xs) -> x :: rest ]

[<Tests>]
let assignment =
    testList "MoeCompress.assignment" [
        test "a hand-checked 3 × 3 maximum: rows 0,1,2 take columns 0,2,1 (4 + 5 + 2 = 11)" {
            let s = matrix [ [ 4.; 1.; 3. ]; [ 2.; 0.; 5. ]; [ 3.; 2.; 2. ] ]
            let a = LinearAssignment.Solve s
            Expect.sequenceEqual a.Columns [ 0; 2; 1 ] "the optimum"
            Expect.isTrue a.Exact "solved exactly"
            Expect.equal (LinearAssignment.Total(s, a.Columns)) 11.0 "its total"
        }
        test "the Hungarian total equals the brute-force maximum over all 720 permutations of random 6 × 6 matrices" {
            let rng = Random 7
            for _ in 1 .. 30 do
                let s = Array2D.init 6 6 (fun _ _ -> Math.Round(rng.NextDouble() * 20.0 - 10.0, 1))
                let best = permutations [ 0 .. 5 ] |> List.map (fun p -> LinearAssignment.Total(s, p)) |> List.max
                let a = LinearAssignment.Solve s
                Expect.sequenceEqual (Seq.sort a.Columns) [ 0 .. 5 ] "a permutation"
                Expect.floatClose Accuracy.veryHigh (LinearAssignment.Total(s, a.Columns)) best "optimal"
        }
        test "above the exact limit the greedy fallback gives a permutation and says so" {
            let s = matrix [ [ 4.; 1.; 3. ]; [ 2.; 0.; 5. ]; [ 3.; 2.; 2. ] ]
            let a = LinearAssignment.Solve(s, exactLimit = 2)
            Expect.isFalse a.Exact "greedy"
            // row 1 (best 5) takes column 2, row 0 (best 4) column 0, row 2 what is left
            Expect.sequenceEqual a.Columns [ 0; 2; 1 ] "greedy picks"
        }
        test "a non-square or non-finite matrix is refused" {
            Expect.throwsT<ArgumentException> (fun () -> LinearAssignment.Solve(Array2D.zeroCreate 2 3) |> ignore) "non-square"
            Expect.throwsT<ArgumentException> (fun () -> LinearAssignment.Solve(matrix [ [ nan ] ]) |> ignore) "NaN"
        }
    ]

[<Tests>]
let alignment =
    testList "MoeCompress.alignment" [
        test "a permuted copy of an expert aligns back exactly, and permuting neurons keeps the function" {
            let e = randomExpert 3L 12L 5L
            let order = [ 5; 2; 11; 0; 7; 1; 9; 3; 10; 4; 8; 6 ]
            let shuffled = NeuronAlignment.Permute(e, order)
            use x = torch.randn(4L, 5L)
            Expect.isTrue ((shuffled.Apply x).allclose(e.Apply x, 1e-5, 1e-6)) "same function"
            Expect.isFalse (eqT shuffled.Gate e.Gate) "but other rows"
            let back = NeuronAlignment.Align(e, shuffled)
            Expect.isTrue (sameExpert back e) "aligned back bit for bit"
        }
        test "a hand-checked similarity: gate rows, up rows and down columns add up" {
            // ref neurons (gate, up, down col): n0 = (1, 0, 2), n1 = (0, 1, 1); target n0 = (0, 1, 0), n1 = (1, 1, 1)
            let r = ExpertWeights(tensor2 [ [ 1.f ]; [ 0.f ] ], tensor2 [ [ 0.f ]; [ 1.f ] ], tensor2 [ [ 2.f; 1.f ] ])
            let t = ExpertWeights(tensor2 [ [ 0.f ]; [ 1.f ] ], tensor2 [ [ 1.f ]; [ 1.f ] ], tensor2 [ [ 0.f; 1.f ] ])
            let s = NeuronAlignment.Similarity(r, t)
            Expect.equal s (matrix [ [ 0.; 3. ]; [ 1.; 2. ] ]) "S[i, j] = g·g + u·u + d·d"
            Expect.sequenceEqual (NeuronAlignment.Match(r, t).Columns) [ 1; 0 ] "3 + 1 beats 0 + 2"
        }
    ]

[<Tests>]
let merging =
    testList "MoeCompress.merge" [
        test "merging copies of one expert gives that expert, whatever the weights" {
            let e = randomExpert 4L 6L 3L
            let m = FrequencyWeightedMerge.Average([ e; e; e ], [ 0.2; 0.5; 0.3 ])
            Expect.isTrue ((m.Gate).allclose(e.Gate, 0.0, 1e-7) && (m.Down).allclose(e.Down, 0.0, 1e-7)) "the expert"
            let unused = FrequencyWeightedMerge.Average([ e; e ], [ 0.0; 0.0 ])
            Expect.isTrue (sameExpert unused e) "a group nobody used: uniform, still the expert"
        }
        test "a hand-checked usage-weighted average: (1·[1, 2] + 3·[3, 4]) / 4 = [2.5, 3.5]" {
            let a = ExpertWeights(tensor2 [ [ 1.f; 2.f ] ], tensor2 [ [ 0.f; 0.f ] ], tensor2 [ [ 4.f ]; [ 8.f ] ])
            let b = ExpertWeights(tensor2 [ [ 3.f; 4.f ] ], tensor2 [ [ 4.f; 0.f ] ], tensor2 [ [ 0.f ]; [ 0.f ] ])
            let m = FrequencyWeightedMerge.Average([ a; b ], [ 0.1; 0.3 ])
            Expect.sequenceEqual (values m.Gate) [ 2.5; 3.5 ] "gate"
            Expect.sequenceEqual (values m.Up) [ 3.0; 0.0 ] "up"
            Expect.sequenceEqual (values m.Down) [ 1.0; 2.0 ] "down"
        }
        test "an expert and a neuron-permuted copy merge losslessly once aligned (and not without alignment)" {
            let e = randomExpert 5L 10L 4L
            let shuffled = NeuronAlignment.Permute(e, [ 9; 8; 7; 6; 5; 4; 3; 2; 1; 0 ])
            let struct (merged, exact) = FrequencyWeightedMerge.AlignAndMerge([ e; shuffled ], [ 0.25; 0.75 ])
            Expect.isTrue exact "exact assignment"
            Expect.isTrue ((merged.Gate).allclose(e.Gate, 0.0, 1e-6) && (merged.Down).allclose(e.Down, 0.0, 1e-6)) "the expert back"
            let struct (naive, _) = FrequencyWeightedMerge.AlignAndMerge([ e; shuffled ], [ 0.25; 0.75 ], align = false)
            Expect.isFalse ((naive.Gate).allclose(e.Gate, 0.0, 1e-3)) "plain averaging mixes unrelated neurons"
        }
        test "mismatched counts and negative weights are refused" {
            let e = randomExpert 6L 4L 2L
            Expect.throwsT<ArgumentException> (fun () -> FrequencyWeightedMerge.Average([ e ], [ 0.5; 0.5 ]) |> ignore) "count"
            Expect.throwsT<ArgumentException> (fun () -> FrequencyWeightedMerge.Average([ e; e ], [ 0.5; -0.1 ]) |> ignore) "negative"
        }
    ]

[<Tests>]
let grouping =
    testList "MoeCompress.grouping" [
        test "usage counts top-2 selections: tokens (3, 1, 2) and (0, 5, 1) pick {0, 2} and {1, 2}" {
            let logits = tensor2 [ [ 3.f; 1.f; 2.f ]; [ 0.f; 5.f; 1.f ] ]
            Expect.sequenceEqual (ExpertGrouping.UsageCounts(logits, 2)) [ 1L; 1L; 2L ] "counts"
            Expect.sequenceEqual (ExpertGrouping.UsageFrequency(logits, 2)) [ 0.25; 0.25; 0.5 ] "frequencies"
        }
        test "router-logit similarity is (cos + 1) / 2 of logit columns" {
            // columns: e0 = (1, 2), e1 = (2, 4) (parallel), e2 = (-2, 1) (orthogonal to e0), e3 = (-1, -2) (opposite)
            let logits = tensor2 [ [ 1.f; 2.f; -2.f; -1.f ]; [ 2.f; 4.f; 1.f; -2.f ] ]
            let s = ExpertGrouping.RouterLogitSimilarity logits
            Expect.floatClose Accuracy.veryHigh s.[0, 1] 1.0 "parallel"
            Expect.floatClose Accuracy.veryHigh s.[0, 2] 0.5 "orthogonal"
            Expect.floatClose Accuracy.veryHigh s.[0, 3] 0.0 "opposite"
            Expect.equal s.[2, 2] 1.0 "diagonal"
        }
        test "grouping on a hand-made similarity: dominants 1 and 2 by usage; 0 joins 2, 3 joins 1" {
            let usage = [ 0.1; 0.4; 0.3; 0.2 ]
            let s = matrix [ [ 1.; 0.2; 0.9; 0.1 ]; [ 0.2; 1.; 0.3; 0.8 ]; [ 0.9; 0.3; 1.; 0.4 ]; [ 0.1; 0.8; 0.4; 1. ] ]
            let g = ExpertGrouping.Group(usage, s, 2)
            Expect.sequenceEqual g.Dominant [ 1; 2 ] "dominant experts by usage"
            Expect.sequenceEqual g.Labels [ 1; 0; 1; 0 ] "labels"
            Expect.sequenceEqual (g.Members 0) [ 1; 3 ] "group 0"
            Expect.sequenceEqual (g.Members 1) [ 2; 0 ] "group 1"
            let all = ExpertGrouping.Group(usage, s, 4)
            Expect.sequenceEqual all.Labels [ 3; 0; 1; 2 ] "K = E: every expert its own group"
            let one = ExpertGrouping.Group(usage, s, 1)
            Expect.sequenceEqual one.Labels [ 0; 0; 0; 0 ] "K = 1: one group"
        }
        test "K outside 1..E is refused" {
            let s = matrix [ [ 1.; 0. ]; [ 0.; 1. ] ]
            Expect.throwsT<ArgumentException> (fun () -> ExpertGrouping.Group([ 0.5; 0.5 ], s, 0) |> ignore) "K = 0"
            Expect.throwsT<ArgumentException> (fun () -> ExpertGrouping.Group([ 0.5; 0.5 ], s, 3) |> ignore) "K > E"
        }
    ]

[<Tests>]
let lowRank =
    testList "MoeCompress.lowRank" [
        test "rank 2 of diag(3, 2, 1) is diag(3, 2, 0); rank ≥ min(m, n) keeps the matrix" {
            let w = tensor2 [ [ 3.f; 0.f; 0.f ]; [ 0.f; 2.f; 0.f ]; [ 0.f; 0.f; 1.f ] ]
            let t = LowRankCompression.Truncate(w, 2)
            Expect.isTrue ((t).allclose(tensor2 [ [ 3.f; 0.f; 0.f ]; [ 0.f; 2.f; 0.f ]; [ 0.f; 0.f; 0.f ] ], 0.0, 1e-6)) "truncated"
            Expect.isTrue (eqT (LowRankCompression.Truncate(w, 3)) w) "full rank"
            Expect.equal (LowRankCompression.FactoredSize(3L, 3L, 1)) 6L "1·(3 + 3)"
            Expect.equal (LowRankCompression.FactoredSize(3L, 3L, 2)) 9L "2·6 = 12 > 9: dense is smaller"
            Expect.throwsT<ArgumentException> (fun () -> LowRankCompression.Truncate(w, 0) |> ignore) "rank 0"
        }
    ]

[<Tests>]
let selfContrast =
    testList "MoeCompress.selfContrast" [
        test "a hand-computed SCMoE step: β = 1, α = 0.2 picks token 1 where greedy picks token 0" {
            let strong = torch.tensor([| 0.5; 0.3; 0.15; 0.05 |]).log()
            let weak = torch.tensor([| 0.6; 0.1; 0.2; 0.1 |]).log()
            // plausible: p ≥ 0.2 · 0.5 = 0.1 → tokens 0, 1, 2; scores 2 ln p_s − ln p_w = ln(0.25/0.6), ln(0.09/0.1), ln(0.0225/0.2)
            let s = SelfContrast.Scores(strong, weak, 1.0, 0.2) |> values
            Expect.floatClose Accuracy.veryHigh s.[0] (log (0.25 / 0.6)) "token 0"
            Expect.floatClose Accuracy.veryHigh s.[1] (log 0.9) "token 1"
            Expect.floatClose Accuracy.veryHigh s.[2] (log 0.1125) "token 2"
            Expect.equal s.[3] -infinity "implausible token 3"
            let p = SelfContrast.LogProbs(strong, weak, 1.0, 0.2) |> values |> Array.map exp
            Expect.floatClose Accuracy.veryHigh p.[1] (0.9 / (0.25 / 0.6 + 0.9 + 0.1125)) "renormalised over the plausible set"
            Expect.equal (Array.findIndex (fun x -> x = Array.max s) s) 1 "SCMoE's choice"
            let s0 = SelfContrast.Scores(strong, weak, 0.0, 0.2) |> values
            Expect.equal (Array.findIndex (fun x -> x = Array.max s0) s0) 0 "β = 0: greedy's choice"
        }
        test "β = 0 and α = 0 score the strong model's own distribution" {
            let strong = torch.tensor([| 1.0; -2.0; 0.5; 3.0 |])
            let weak = torch.tensor([| 0.0; 4.0; 0.0; 0.0 |])
            let lp = SelfContrast.LogProbs(strong, weak, 0.0, 0.0)
            Expect.isTrue ((lp).allclose(strong.log_softmax(0), 0.0, 1e-12)) "log softmax of the strong logits"
        }
        test "bad β and α are refused" {
            Expect.throwsT<ArgumentException> (fun () -> SelfContrast.Validate(-0.1, 0.1)) "β < 0"
            Expect.throwsT<ArgumentException> (fun () -> SelfContrast.Validate(0.5, 1.5)) "α > 1"
            Expect.throwsT<ArgumentException> (fun () -> SelfContrast.Validate(nan, 0.1)) "NaN"
        }
    ]

// ---- End to end: a tiny random Mixtral with the byte tokenizer ----

open System.IO
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Core.Moe.Sparse
open MergeDsl.Tests.CliHarness

/// Mixtral over the byte vocabulary: 6 experts of width 12 (HF Mixtral: intermediate_size is the expert width), top-2, 2 layers, context 64.
let private mixtral =
    DecoderConfig(Family = DecoderFamily.Mixtral, VocabSize = 258, HiddenSize = 16, IntermediateSize = 12, NumHiddenLayers = 2,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, RopeTheta = 1000.0,
                  BosTokenId = Nullable ByteTokenizer.Bos, EosTokenId = Nullable ByteTokenizer.Eos,
                  Moe = SparseMoeConfig(Style = SparseMoeStyle.Mixtral, NumExperts = 6, ExpertsPerToken = 2, ExpertIntermediateSize = 12))

let private withDir (f: string -> unit) =
    let dir = Path.Combine(Path.GetTempPath(), "mergedsl-mcsmoe-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    try f dir finally Directory.Delete(dir, true)

let private ids (xs: int list) = torch.tensor(xs |> List.map int64 |> Array.ofList).reshape(1L, int64 xs.Length)

let private sample = [ 256; 72; 101; 108; 108; 111; 44; 32; 119; 111; 114; 108; 100; 33; 10; 84; 104; 101 ]

let private logitsOf (m: DecoderModel) =
    use _ = torch.no_grad ()
    m.Forward(ids sample).detach().clone()

let private expertsOf (b: SparseMoeBlock) (i: int) =
    let e = b.Experts[i]
    ExpertWeights(e.Gate.Weight.detach().clone(), e.Up.Weight.detach().clone(), e.Down.Weight.detach().clone())

let private expectOneLine (code, _out: string, err: string) (fragment: string) =
    Expect.equal code 2 $"usage exit: {err}"
    Expect.stringContains err fragment "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"

[<Tests>]
let endToEnd =
    testSequenced <| testList "MoeCompress.endToEnd" [
        test "moe compress with K = E writes a Mixtral folder whose logits are the original's" {
            withDir (fun dir ->
                use m = DecoderModelFolder.Random(mixtral, 11L, 0.3)
                let folder = Path.Combine(dir, "model")
                DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                let text = Path.Combine(dir, "calib.txt")
                File.WriteAllText(text, "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.")
                let out = Path.Combine(dir, "out")
                let code, stdout, err = mergedsl [ "moe"; "compress"; folder; "--data"; text; "--experts"; "6"; "--out"; out; "--json" ]
                Expect.equal code 0 $"runs: {err}"
                Expect.stringContains stdout "\"parameters_after\"" "JSON report"
                use c = DecoderModelFolder.Load out
                Expect.equal c.Config.Family DecoderFamily.Mixtral "a Mixtral"
                Expect.isTrue ((logitsOf c).allclose(logitsOf m, 0.0, 1e-5)) "the original's logits"
                Expect.equal c.ParameterCount m.ParameterCount "every parameter kept"
                Expect.isTrue (File.Exists(Path.Combine(out, "mc_smoe.json"))) "the report beside the weights")
        }
        test "experts that are neuron-permuted duplicates merge back losslessly (K = 3 of 6), through a saved folder" {
            withDir (fun dir ->
                use m = DecoderModelFolder.Random(mixtral, 12L, 0.3)
                let perm = [ 11; 3; 7; 0; 9; 1; 5; 10; 2; 8; 4; 6 ]
                do
                    use _ = torch.no_grad ()
                    for b in SparseMoe.Blocks m do
                        for i in 0 .. 2 do
                            let twin = NeuronAlignment.Permute(expertsOf b i, perm)
                            b.Experts[i + 3].Gate.Weight.copy_(twin.Gate) |> ignore
                            b.Experts[i + 3].Up.Weight.copy_(twin.Up) |> ignore
                            b.Experts[i + 3].Down.Weight.copy_(twin.Down) |> ignore
                let before = logitsOf m
                // Calibration logits: every token's top expert i ∈ {0, 1, 2} (10), its twin i + 3 half as large (5),
                // the rest 1; so twins have parallel logit columns (similarity 1) and equal usage (dominants 0, 1, 2).
                let calib =
                    torch.tensor(
                        [| for t in 0 .. 29 do
                               let i = t % 3
                               for e in 0 .. 5 -> if e = i then 10.0f elif e = i + 3 then 5.0f else 1.0f |]).reshape(30L, 6L)
                let report = McSmoe.Compress(m, (fun _ -> calib), McSmoeOptions(Experts = 3))
                for l in report.Layers do
                    Expect.sequenceEqual l.Groups.Dominant [ 0; 1; 2 ] "dominant experts"
                    Expect.sequenceEqual l.Groups.Labels [ 0; 1; 2; 0; 1; 2 ] "twins grouped"
                    Expect.isTrue l.ExactAlignment "exact"
                let expertParams = 3L * 12L * 16L
                Expect.equal report.ParametersAfter (report.ParametersBefore - 2L * 3L * expertParams) "three experts per layer counted once"
                let folder = Path.Combine(dir, "merged")
                DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                use back = DecoderModelFolder.Load folder
                Expect.isTrue ((logitsOf back).allclose(before, 0.0, 1e-4)) "the same model")
        }
        test "merging without alignment loses what alignment keeps" {
            use m = DecoderModelFolder.Random(mixtral, 13L, 0.3)
            do
                use _ = torch.no_grad ()
                for b in SparseMoe.Blocks m do
                    let twin = NeuronAlignment.Permute(expertsOf b 0, [ 11 .. -1 .. 0 ])
                    b.Experts[1].Gate.Weight.copy_(twin.Gate) |> ignore
                    b.Experts[1].Up.Weight.copy_(twin.Up) |> ignore
                    b.Experts[1].Down.Weight.copy_(twin.Down) |> ignore
            let before = logitsOf m
            let calib = torch.tensor([| for _ in 0 .. 9 do yield! [ 9.0f; 8.0f; 1.0f; 1.0f; 1.0f; 1.0f ] |]).reshape(10L, 6L)
            McSmoe.Compress(m, (fun _ -> calib), McSmoeOptions(Experts = 5, Align = false)) |> ignore
            Expect.isFalse ((logitsOf m).allclose(before, 0.0, 1e-3)) "unaligned twins average into another function"
        }
        test "bad input: K < 1, K > E, rank < 1, a dense model, empty data: one line, exit 2, nothing written" {
            withDir (fun dir ->
                use m = DecoderModelFolder.Random(mixtral, 14L, 0.3)
                let folder = Path.Combine(dir, "model")
                DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                let dense = Path.Combine(dir, "dense")
                use d = DecoderModelFolder.Random(DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 258, HiddenSize = 16, IntermediateSize = 20,
                                                                NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4,
                                                                MaxPositionEmbeddings = 64), 1L)
                DecoderModelFolder.Save(dense, d, DecoderModelFolder.ByteTokenizerFiles())
                let text = Path.Combine(dir, "calib.txt")
                File.WriteAllText(text, "some calibration text")
                let empty = Path.Combine(dir, "empty.txt")
                File.WriteAllText(empty, "")
                let out = Path.Combine(dir, "out")
                let run (extra: string list) = mergedsl ([ "moe"; "compress" ] @ extra @ [ "--out"; out ])
                expectOneLine (run [ folder; "--data"; text; "--experts"; "0" ]) "--experts 0"
                expectOneLine (run [ folder; "--data"; text; "--experts"; "7" ]) "--experts 7 is outside 1..6"
                expectOneLine (run [ folder; "--data"; text; "--experts"; "2"; "--rank"; "0" ]) "--rank 0"
                expectOneLine (run [ dense; "--data"; text; "--experts"; "1" ]) "dense model"
                expectOneLine (run [ folder; "--data"; empty; "--experts"; "2" ]) "empty"
                Expect.isFalse (Directory.Exists out) "nothing written")
        }
    ]

[<Tests>]
let contrastEndToEnd =
    testSequenced <| testList "MoeCompress.scmoe" [
        test "SCMoE with β = 0 generates what greedy generates (two KV caches against one)" {
            use m = DecoderModelFolder.Random(mixtral, 21L, 0.3)
            let prompt = [ 256; 84; 104; 101 ]
            let greedy = DecoderGeneration.Generate(m, prompt, GenerationOptions(MaxNewTokens = 20)).Tokens
            let settings = Contrast.SelfContrastSettings(TopK 2, TopK 1, 0.0, 0.1)
            let scmoe = Contrast.ContrastDecoding.Generate(m, prompt, 20, settings)
            Expect.sequenceEqual scmoe greedy "same tokens"
            Expect.equal (string (SparseMoe.Blocks m).[0].Routing) "top-k:2" "routing restored"
        }
        test "SCMoE decoding with β > 0 takes the contrast's argmax each step (checked without a cache)" {
            use m = DecoderModelFolder.Random(mixtral, 22L, 0.3)
            let prompt = [ 256; 84; 104 ]
            let settings = Contrast.SelfContrastSettings(TopK 2, TopK 1, 1.0, 0.05)
            let tokens = Contrast.ContrastDecoding.Generate(m, prompt, 8, settings)
            let mutable seq = prompt
            for t in tokens do
                use _ = torch.no_grad ()
                SparseMoe.SetRouting(m, TopK 2)
                let s = m.Forward(ids seq).select(0, 0).select(0, int64 seq.Length - 1L)
                SparseMoe.SetRouting(m, TopK 1)
                let w = m.Forward(ids seq).select(0, 0).select(0, int64 seq.Length - 1L)
                SparseMoe.SetRouting(m, null)
                let expected = SelfContrast.Scores(s, w, 1.0, 0.05).argmax().item<int64>()
                Expect.equal (int64 t) expected "argmax of the contrast"
                seq <- seq @ [ t ]
        }
        test "scoring under greedy is the model's own log-likelihood; windows cover every token once" {
            use m = DecoderModelFolder.Random(mixtral, 23L, 0.3)
            let settings = Contrast.SelfContrastSettings(TopK 2, TopK 2, 0.0, 0.0)
            let s = Contrast.ContrastDecoding.Score(m, sample, 64, settings)
            let reference = DecoderScoring.Score(m, [ sample :> Collections.Generic.IReadOnlyList<int> ])[0]
            Expect.equal s.Tokens (int64 reference.Tokens) "tokens"
            Expect.floatClose Accuracy.medium s.SumLogLikelihood reference.SumLogLikelihood "log-likelihood"
            let windows = Contrast.ContrastDecoding.Score(m, sample, 5, settings)
            Expect.equal windows.Tokens (int64 sample.Length - 1L) "windows of 5 overlapping by one predict each token once"
        }
        test "CLI: generate --decoding scmoe --beta 0 equals plain generate; score reports both; bad β is one line" {
            withDir (fun dir ->
                use m = DecoderModelFolder.Random(mixtral, 24L, 0.3)
                let folder = Path.Combine(dir, "model")
                DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                let c1, g1, e1 = mergedsl [ "generate"; folder; "--prompt"; "The"; "--max-new-tokens"; "12"; "--json" ]
                let c2, g2, e2 = mergedsl [ "generate"; folder; "--prompt"; "The"; "--max-new-tokens"; "12"; "--json"; "--decoding"; "scmoe"; "--beta"; "0" ]
                Expect.equal (c1, c2) (0, 0) $"both run: {e1} {e2}"
                let tokensOf (json: string) = System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("tokens").ToString()
                Expect.equal (tokensOf g2) (tokensOf g1) "same tokens (experts per token differs: scmoe also runs the weak pass)"
                let text = Path.Combine(dir, "held.txt")
                File.WriteAllText(text, String.replicate 5 "Held-out text, longer than one window of sixty-four bytes. ")
                let cs, so, es = mergedsl [ "score"; folder; "--text"; text; "--decoding"; "scmoe"; "--beta"; "0.5"; "--json" ]
                Expect.equal cs 0 $"scores: {es}"
                Expect.stringContains so "\"decoding\": \"scmoe\"" "scmoe"
                expectOneLine (mergedsl [ "generate"; folder; "--prompt"; "x"; "--decoding"; "scmoe"; "--beta"; "-1" ]) "--beta"
                expectOneLine (mergedsl [ "score"; folder; "--text"; text; "--decoding"; "nucleus" ]) "--decoding")
        }
    ]
