/// rope_scaling (linear, llama3) in the decoder runtime: hand-checked inverse frequencies, the position-interpolation
/// law, logits against the independent reference, gate vectors, refusals, and config.json round trips.
module MergeDsl.Tests.RopeScalingTests

open System
open System.IO
open System.Collections.Generic
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Core.Moe.Sparse.Upcycling
open MergeDsl.Tests.TestSupport
open MergeDsl.Tests.CheckpointFixtures
open MergeDsl.Tests.CliHarness

/// Llama 3.2's rope_scaling (Llama 3.1 has factor 8).
let private llama32 = RopeScaling.Llama3(32.0, 1.0, 4.0, 8192)

/// A tiny Llama whose head_dim 8, θ 10 and original context 32 put its four rotary pairs in every llama3 band
/// (wavelengths 2π·(1, 1.78, 3.16, 5.62) ≈ 6.3, 11.2, 19.9, 35.3 against 32/4 = 8 and 32/1 = 32): one kept, two
/// interpolated, one divided by the factor, so sequences of 8 tokens see all three.
let private tinyLlamaLayers (layers: int) (scaling: RopeScaling) =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = ByteTokenizer.VocabSize, HiddenSize = 16, IntermediateSize = 24,
                  NumHiddenLayers = layers, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 8, MaxPositionEmbeddings = 64,
                  RopeTheta = 10.0, RopeScaling = scaling, EosTokenId = Nullable ByteTokenizer.Eos)

let private tinyLlama (scaling: RopeScaling) = tinyLlamaLayers 2 scaling

let private llama3Scaling : RopeScaling = RopeScaling.Llama3(4.0, 1.0, 4.0, 32)

let private llama3Tiny = tinyLlama llama3Scaling

let private relClose (actual: float) (expected: float) what =
    Expect.isLessThanOrEqual (abs (actual - expected) / abs expected) 1e-6 $"{what}: {actual} vs {expected}"

let private ids2d (row: int[]) = torch.tensor(row |> Array.map int64).reshape(1L, int64 row.Length)

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32> ()

/// A config.json with a replaced rope_scaling.
let private withRopeScaling (cfg: DecoderConfig) (scaling: string) =
    let o = cfg.ToJsonObject()
    o["rope_scaling"] <- JsonNode.Parse scaling
    o.ToJsonString()

let private expectOneLineFailure (code, _: string, err: string) (fragments: string list) =
    Expect.equal code 1 $"exit 1 (a bad model file): {err}"
    for f in fragments do Expect.stringContains err f "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"

[<Tests>]
let tests =
    testSequenced <| testList "decoder rope_scaling" [
        test "llama3 inverse frequencies (Llama 3.2: factor 32, low 1, high 4, original 8192; head_dim 8, θ 500000) are hand-checked" {
            // python3: f_i = 500000^(-i/4) = 1, 0.0376060309, 0.00141421356, 5.31829590e-05; wavelengths 2π/f_i =
            // 6.28, 167.1, 4442.88, 118144 against 8192/4 = 2048 and 8192/1 = 8192. Pairs 0, 1 are kept; pair 3 is
            // divided: 5.31829590e-05 / 32 = 1.66196747e-06; pair 2 is interpolated with s = (8192/4442.88 - 1)/3
            // = 0.281282605: f·((1 - s)/32 + s) = 0.00141421356 · 0.303742811 = 0.000429556797.
            let expected = [| 1.0; 0.03760603093086393; 0.00042955679655936815; 1.661967467795309e-06 |]
            // The published formula, evaluated here with plain doubles, gives the same literals.
            let formula =
                Array.init 4 (fun i ->
                    let f = Math.Pow(500000.0, -float i / 4.0)
                    let wavelength = 2.0 * Math.PI / f
                    if wavelength < 8192.0 / 4.0 then f
                    elif wavelength > 8192.0 / 1.0 then f / 32.0
                    else
                        let s = (8192.0 / wavelength - 1.0) / (4.0 - 1.0)
                        (1.0 - s) * f / 32.0 + s * f)
            for i in 0..3 do relClose formula[i] expected[i] $"formula, pair {i}"
            let ours = RotaryEmbedding.InverseFrequencies(8, 500000.0, llama32)
            Expect.equal ours.Length 4 "head_dim / 2 frequencies"
            for i in 0..3 do relClose (float ours[i]) expected[i] $"runtime, pair {i}"
            // Llama 3.1's factor 8 changes only the interpolated and divided pairs.
            let llama31 = RotaryEmbedding.InverseFrequencies(8, 500000.0, RopeScaling.Llama3(8.0, 1.0, 4.0, 8192))
            // pair 2: 0.00141421356 · ((1 - 0.281282605)/8 + 0.281282605) = 0.00141421356 · 0.371122280 = 0.000524846161;
            // pair 3: 5.31829590e-05 / 8 = 6.64786987e-06.
            for i, e in List.indexed [ 1.0; 0.03760603093086393; 0.0005248461609929547; 6.647869871181235e-06 ] do
                relClose (float llama31[i]) e $"Llama 3.1, pair {i}"
        }

        test "linear inverse frequencies are θ^(-2i/d) / factor (head_dim 8, θ 10000, factor 4: hand-checked)" {
            // 10000^(-i/4) = 1, 0.1, 0.01, 0.001; divided by 4.
            let ours = RotaryEmbedding.InverseFrequencies(8, 10000.0, RopeScaling.Linear 4.0)
            for i, e in List.indexed [ 0.25; 0.025; 0.0025; 0.00025 ] do relClose (float ours[i]) e $"pair {i}"
            let unscaled = RotaryEmbedding.InverseFrequencies(8, 10000.0)
            for i, e in List.indexed [ 1.0; 0.1; 0.01; 0.001 ] do relClose (float unscaled[i]) e $"unscaled pair {i}"
        }

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
            "linear factor 2 rotates position 2p as the unscaled embedding rotates position p" <| fun (p: byte) (seed: int) ->
            use _ = torch.NewDisposeScope()
            let p = int64 p % 100L
            use scaled = new RotaryEmbedding(8, 10000.0, 256, RopeScaling.Linear 2.0)
            use plain = new RotaryEmbedding(8, 10000.0, 256)
            let x = torch.randn([| 1L; 2L; 1L; 8L |], generator = new torch.Generator(uint64 (uint32 seed)))
            let a = scaled.Apply(x, 2L * p)
            let b = plain.Apply(x, p)
            Expect.isLessThanOrEqual (maxAbs a b) 1e-6f $"p = {p}"
            if p > 0L then Expect.isGreaterThan (maxAbs (plain.Apply(x, 2L * p)) b) 1e-4f "unscaled 2p differs from p"

        for name, cfg in [ "llama3 (all three bands)", llama3Tiny; "linear factor 3", tinyLlama (RopeScaling.Linear 3.0) ] do
            test $"logits match the independent plain-ops reference with {name} scaling, and differ from the unscaled model's" {
                use _ = torch.NewDisposeScope()
                use m = DecoderModelFolder.Random(cfg, 21L, 0.3)
                let w = m.StateTensors()
                let ids = [| 256; 5; 200; 17; 99; 31; 7; 140 |]
                use _ng = torch.no_grad ()
                let ours = m.Forward(ids2d ids).select(0, 0L)
                let reference = DecoderReference.forward cfg w ids
                let expected = torch.tensor(Array.concat reference |> Array.map float32).reshape(8L, int64 cfg.VocabSize)
                let scale = expected.abs().max().item<float32> ()
                Expect.isGreaterThan scale 0.5f "logits are not trivially small"
                let err = maxAbs ours expected
                Expect.isLessThan err (2e-5f * max 1.0f scale) $"max |runtime - reference| = {err} (scale {scale})"
                use plain = new DecoderModel(tinyLlama null)
                plain.LoadWeights(w) |> ignore
                let diff = maxAbs (plain.Forward(ids2d ids).select(0, 0L)) ours
                Expect.isGreaterThan diff 1e-3f "the scaling changes the logits"
            }

        test "hidden gate vectors (mergekit-moe) use the scaled rotary: layer inputs match the independent reference" {
            use _ = torch.NewDisposeScope()
            use m = DecoderModelFolder.Random(llama3Tiny, 5L, 0.3)
            let ids = [| 256; 40; 41; 42; 43; 44; 45; 46 |]
            let states = GateVectors.LayerInputs(m, ids)
            let weights = Dictionary<string, torch.Tensor>(m.StateTensors())
            // Through the first layer only, a final norm of weight 1 and an identity head: x / rms(x) of layer 1's input.
            weights["model.norm.weight"] <- torch.ones(16L)
            weights["lm_head.weight"] <- torch.eye(16L)
            let out = DecoderReference.forward (tinyLlamaLayers 1 llama3Scaling) weights ids
            let normalise (v: torch.Tensor) = v / v.norm()
            for t in 0 .. ids.Length - 1 do
                let expected = normalise (torch.tensor(out[t]))
                let got = normalise (states[1L, int64 t].to_type(torch.ScalarType.Float64))
                Expect.isLessThan ((got - expected).abs().max().item<double> ()) 1e-5 $"token {t}"
        }

        test "config.json: rope_type and legacy type load; unsupported types and bad fields are refused in one line" {
            let parse (json: string) = DecoderConfig.FromJson(json, "m/config.json")
            let unscaled = tinyLlama null
            let read scaling = (parse (withRopeScaling unscaled scaling)).RopeScaling
            Expect.equal (read """{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}""")
                (llama32 :> RopeScaling) "Llama 3.2"
            Expect.equal (read """{"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 8192.0}""")
                (RopeScaling.Llama3(8.0, 1.0, 4.0, 8192) :> RopeScaling) "integers as numbers and back"
            Expect.equal (read """{"type": "linear", "factor": 2}""") (RopeScaling.Linear 2.0 :> RopeScaling) "legacy type, integer factor"
            Expect.equal (read """{"rope_type": "linear", "type": "linear", "factor": 2.0}""") (RopeScaling.Linear 2.0 :> RopeScaling) "both keys"
            Expect.isNull (read """{"rope_type": "default"}""") "default"
            Expect.isNull (read "null") "null"
            // transformers 5 keeps rope_theta and the scaling in rope_parameters.
            let v5 = unscaled.ToJsonObject()
            v5.Remove "rope_theta" |> ignore
            v5["rope_parameters"] <- JsonNode.Parse """{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"""
            let c5 = parse (v5.ToJsonString())
            Expect.equal (c5.RopeTheta, c5.RopeScaling) (500000.0, RopeScaling.Llama3(8.0, 1.0, 4.0, 8192) :> RopeScaling) "rope_parameters"
            let bad scaling (fragment: string) =
                throwsWith<FormatException> (fun () -> parse (withRopeScaling unscaled scaling) |> ignore) ("m/config.json: " + fragment) fragment
            bad """{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}""" "rope_scaling type 'yarn' is not supported"
            bad """{"type": "dynamic", "factor": 2.0}""" "rope_scaling type 'dynamic' is not supported"
            bad """{"rope_type": "longrope", "short_factor": [1], "long_factor": [2]}""" "rope_scaling type 'longrope' is not supported"
            bad """{"type": "su", "short_factor": [1], "long_factor": [2]}""" "rope_scaling type 'su' is not supported"
            bad """{"rope_type": "linear"}""" "rope_scaling.factor is missing"
            bad """{"rope_type": "linear", "factor": 0}""" "rope_scaling.factor must be a positive number, got 0"
            bad """{"rope_type": "linear", "factor": -2.5}""" "rope_scaling.factor must be a positive number, got -2.5"
            bad """{"rope_type": "linear", "factor": "2"}""" "rope_scaling.factor must be a number, got \"2\""
            bad """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}""" "rope_scaling.original_max_position_embeddings is missing"
            bad """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"""
                "rope_scaling.high_freq_factor 4 must be greater than low_freq_factor 4"
            bad """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"""
                "rope_scaling.low_freq_factor must be a positive number, got 0"
            bad """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 0}"""
                "rope_scaling.original_max_position_embeddings must be positive, got 0"
            bad """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192.5}"""
                "rope_scaling.original_max_position_embeddings must be an integer, got 8192.5"
            bad """{"rope_type": "linear", "type": "dynamic", "factor": 2.0}""" "rope_scaling names two types: rope_type 'linear' and type 'dynamic'"
            bad """{"factor": 2.0}""" "rope_scaling {\"factor\":2.0} has no rope_type"
            bad "\"linear\"" "rope_scaling must be an object or null"
            v5["rope_theta"] <- JsonValue.Create 10000.0
            throwsWith<FormatException> (fun () -> parse (v5.ToJsonString()) |> ignore)
                "m/config.json: rope_theta 10000 and rope_parameters.rope_theta 500000 disagree" "two thetas"
            throwsWith<ArgumentException> (fun () -> DecoderConfig(RopeScaling = RopeScaling.Linear -1.0).Validate() |> ignore)
                "rope_scaling.factor must be a positive number, got -1" "Validate"
        }

        test "mergedsl score refuses an unsupported or malformed rope_scaling in one line naming config.json; a llama3 model scores" {
            use dir = new TempDir()
            use m = DecoderModelFolder.Random(llama3Tiny, 4L, 0.3)
            let folder = Path.Combine(dir.Path, "model")
            DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
            let text = Path.Combine(dir.Path, "t.txt")
            File.WriteAllText(text, "abcdefg")
            let code, out, err = mergedsl [ "score"; folder; "--text"; text; "--json" ]
            Expect.equal code 0 err
            let bpb = (JsonNode.Parse out).["bits_per_byte"].GetValue<double> ()
            let s = DecoderScoring.Score(m, ResizeArray [ Array.append [| 256 |] [| 97 .. 103 |] :> IReadOnlyList<int> ])[0]
            Expect.floatClose Accuracy.high bpb (s.BitsPerByte 7L) "the CLI loads the scaling the runtime was built with"
            let cfgFile = Path.Combine(folder, "config.json")
            let rewrite scaling = File.WriteAllText(cfgFile, withRopeScaling llama3Tiny scaling)
            rewrite """{"rope_type": "yarn", "factor": 4.0}"""
            expectOneLineFailure (mergedsl [ "score"; folder; "--text"; text ]) [ "config.json: rope_scaling type 'yarn' is not supported" ]
            rewrite """{"type": "linear", "factor": 0.0}"""
            expectOneLineFailure (mergedsl [ "score"; folder; "--text"; text ]) [ "config.json: rope_scaling.factor must be a positive number, got 0" ]
            rewrite """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}"""
            expectOneLineFailure (mergedsl [ "generate"; folder; "--prompt"; "a" ]) [ "config.json: rope_scaling.original_max_position_embeddings is missing" ]
        }

        test "our writers round-trip rope_scaling: DecoderConfig.ToJson, a saved folder, the mergekit-moe config" {
            use _ = torch.NewDisposeScope()
            for scaling in [ llama32 :> RopeScaling; RopeScaling.Linear 2.5 :> RopeScaling ] do
                let cfg = tinyLlama scaling
                Expect.equal (DecoderConfig.FromJson(cfg.ToJson())) cfg $"ToJson ({scaling.Type})"
                // llama3 as Meta writes it; linear under the legacy key every reader (DeepSeek's remote code too) takes.
                let key = if scaling.Type = "linear" then "type" else "rope_type"
                Expect.equal ((cfg.ToJsonObject()).["rope_scaling"].[key].GetValue<string> ()) scaling.Type $"keyed by {key}"
            let modern = DecoderConfig.FromJson(withRopeScaling (tinyLlama null) """{"rope_type": "linear", "factor": 2.0}""")
            Expect.equal (DecoderConfig.FromJson(modern.ToJson())) modern "rope_type read, type written, same config"
            use dir = new TempDir()
            use m = DecoderModelFolder.Random(llama3Tiny, 8L, 0.3)
            let folder = Path.Combine(dir.Path, "saved")
            DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
            use back = DecoderModelFolder.Load folder
            Expect.equal back.Config llama3Tiny "config"
            use _ng = torch.no_grad ()
            let ids = ids2d [| 256; 1; 2; 3; 4; 5; 6; 7 |]
            Expect.equal (maxAbs (m.Forward ids) (back.Forward ids)) 0.0f "same logits"
            for arch in [ UpcycleArchitecture.Mixtral; UpcycleArchitecture.Qwen2Moe; UpcycleArchitecture.DeepseekMoe ] do
                let text = UpcycleConfigJson.Text(arch, llama3Tiny, 4, (if arch = UpcycleArchitecture.DeepseekMoe then 1 else 0), 2, DType.F32)
                let o = JsonNode.Parse(text).AsObject()
                Expect.equal (RopeScaling.FromJson(o["rope_scaling"])) (llama3Tiny.RopeScaling) $"{arch}'s config.json"
        }
    ]

/// `mergedsl moe` (mergekit-moe) over a llama3-scaled base: the output keeps the scaling and runs as the base does.
[<Tests>]
let upcycleTests =
    testSequenced <| testList "decoder rope_scaling upcycling" [
        let writeModel (dir: string) (name: string) (cfg: DecoderConfig) (seed: int64) =
            let folder = Path.Combine(dir, name)
            use m = DecoderModelFolder.Random(cfg, seed, 0.3)
            DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
            folder
        let yaml (dir: string) (b: string) (experts: string list) (extra: string) =
            let lines = experts |> List.mapi (fun i e -> $"  - source_model: {e}\n    positive_prompts: [\"topic {i}\"]")
            let path = Path.Combine(dir, "moe.yml")
            File.WriteAllText(path, $"base_model: {b}\nexperts_per_token: 2\nexperts:\n{String.Join('\n', lines)}\n{extra}")
            path

        test "Mixtral from identical llama3-scaled experts keeps rope_scaling and gives the base's logits" {
            use dir = new TempDir()
            let b = writeModel dir.Path "base" llama3Tiny 1L
            let es = [ for i in 0..1 -> writeModel dir.Path $"copy{i}" llama3Tiny 1L ]
            let out = Path.Combine(dir.Path, "out")
            let code, _, err = mergedsl [ "moe"; yaml dir.Path b es ""; "--out"; out ]
            Expect.equal code 0 err
            use baseModel = DecoderModelFolder.Load b
            use moe = DecoderModelFolder.Load out
            Expect.equal moe.Config.Family DecoderFamily.Mixtral "Mixtral"
            Expect.equal moe.Config.RopeScaling llama3Scaling "rope_scaling written and read back"
            use _ng = torch.no_grad ()
            let ids = ids2d [| 256; 104; 105; 32; 116; 104; 101; 114; 101 |]
            let d = maxAbs (moe.Forward ids) (baseModel.Forward ids)
            Expect.isLessThan d 1e-4f $"max |moe - base| = {d}"
        }

        test "DeepSeek-MoE takes a linear-scaled base (written with type) and refuses a llama3 one in one line, writing nothing" {
            use dir = new TempDir()
            let shared b = $"shared_experts:\n  - source_model: {b}\n"
            let linear = tinyLlama (RopeScaling.Linear 2.0)
            let bl = writeModel dir.Path "base-linear" linear 1L
            let out = Path.Combine(dir.Path, "out-linear")
            let code, _, err = mergedsl [ "moe"; yaml dir.Path bl [ for i in 2L..3L -> writeModel dir.Path $"lin{i}" linear i ] (shared bl); "--out"; out ]
            Expect.equal code 0 err
            let written = (JsonNode.Parse(File.ReadAllText(Path.Combine(out, "config.json")))).AsObject()
            Expect.equal (written.["architectures"].[0].GetValue<string> ()) "DeepseekForCausalLM" "DeepSeek chosen"
            Expect.equal (written.["rope_scaling"].ToJsonString()) """{"type":"linear","factor":2}""" "DeepSeek's remote code reads type and factor"
            let b3 = writeModel dir.Path "base-llama3" llama3Tiny 1L
            let out3 = Path.Combine(dir.Path, "out-llama3")
            let code, _, err = mergedsl [ "moe"; yaml dir.Path b3 [ for i in 2L..3L -> writeModel dir.Path $"l3{i}" llama3Tiny i ] (shared b3); "--out"; out3 ]
            Expect.equal code 2 $"exit 2 ({err})"
            Expect.stringContains err "base-llama3: its rope_scaling type 'llama3' cannot be written to DeepSeek MoE" "names the base and the type"
            Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
            Expect.isFalse (Directory.Exists out3) "nothing written"
        }
    ]
