module MergeDsl.Tests.MoeCliTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Core.Evaluation
open MergeDsl.Tests.ClipTests
open MergeDsl.Tests.WemoeTests
open MergeDsl.Tests.CliTests

/// A base + two expert model folders (each expert carries its task's head) and a labelled data folder.
let onDisk =
    lazy
        (let root = Directory.CreateTempSubdirectory("mergedsl-moe-cli-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(root, true) with _ -> ())
         let cfg = tinyConfig "quick_gelu"
         let b, experts = WemoeTests.zoo cfg 51L 2
         let save name (w: Collections.Generic.Dictionary<string, torch.Tensor>) heads =
             use m = new ClipVisionModel(cfg)
             m.LoadWeights(w) |> ignore
             let dir = Path.Combine(root, name)
             ClipModelFolder.Save(dir, m, heads)
             dir
         torch.manual_seed 52L |> ignore
         let head t = new ClassificationHead(t, torch.nn.functional.normalize(torch.randn([| 3L; 8L |]), dim = -1L), 20.0f)
         let baseDir = save "base" b (readOnlyDict [])
         let e0 = save "taskA" experts.[0] (readOnlyDict [ "taskA", head "taskA" ])
         let e1 = save "taskB" experts.[1] (readOnlyDict [ "taskB", head "taskB" ])
         let data = Path.Combine(root, "data")
         Directory.CreateDirectory data |> ignore
         for t in [ "taskA"; "taskB" ] do
             TaskDataFolder.Save(Path.Combine(data, t + ".safetensors"),
                                 torch.randint(0L, 256L, [| 24L; 3L; 8L; 8L |], dtype = torch.uint8), torch.randint(0L, 3L, [| 24L |]))
         cfg, b, experts, baseDir, e0, e1, data, root)

[<Tests>]
let tests =
    testSequenced <| testList "MoE command line and DSL" [
        test "a NaN in an expert's MLP stops upscale with one line naming tensor and model (regression: unchecked)" {
            let cfg, b, experts, baseDir, _, e1, _, root = onDisk.Value
            let poisoned = Collections.Generic.Dictionary<string, torch.Tensor>(experts.[0])
            let name = "vision_model.encoder.layers.0.mlp.fc1.weight"
            let w = poisoned[name].clone()
            w.view(-1L).[3L] <- torch.tensor(nan).to_type(w.dtype)
            poisoned[name] <- w
            let dir = Path.Combine(root, "poisoned")
            let saveTo () =
                use m = new ClipVisionModel(cfg)
                m.LoadWeights(poisoned) |> ignore
                ClipModelFolder.Save(dir, m, readOnlyDict [])
            saveTo ()
            let out = Path.Combine(root, "poisoned-moe")
            let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; dir; "--model"; e1; "--out"; out ]
            Expect.equal code 1 $"exit 1 ({err})"
            Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
            Expect.stringContains err name "names the tensor"
            Expect.stringContains err "poisoned" "names the model"
            Expect.isFalse (Directory.Exists out) "nothing written"
        }

        test "upscale -> adapt -> eval end to end through `mergedsl`" {
            let _, _, _, baseDir, e0, e1, data, root = onDisk.Value
            let up = Path.Combine(root, "wemoe-" + Guid.NewGuid().ToString("N").Substring(0, 6))
            let code, out, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; up; "--set"; "router-depth=1"; "--set"; "lambda=0.3" ]
            Expect.equal code 0 $"upscale: {err}"
            Expect.stringContains out "upscaled 2 module(s)" "summary"
            let adapted = up + "-adapted"
            let code, out, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "5"; "--batch"; "4"; "--lr"; "1e-3"; "--quiet" ]
            Expect.equal code 0 $"adapt: {err}"
            Expect.stringContains out "steps/s" "speed printed"
            Expect.isTrue (File.Exists(Path.Combine(adapted, "adapt_log.json"))) "loss log"
            let log = JsonNode.Parse(File.ReadAllText(Path.Combine(adapted, "adapt_log.json")))
            Expect.equal (log.["objective"].GetValue<string>()) "entropy" "the papers' objective by default"
            let diverse = up + "-diverse"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "3"; "--batch"; "4"; "--objective"; "entropy-diversity"; "--diversity"; "0.5"; "--out"; diverse; "--quiet" ]
            Expect.equal code 0 $"adapt entropy-diversity: {err}"
            let log = JsonNode.Parse(File.ReadAllText(Path.Combine(diverse, "adapt_log.json")))
            Expect.equal (log.["objective"].GetValue<string>(), log.["diversity_weight"].GetValue<float>()) ("entropy-diversity", 0.5) "objective logged"
            let distilled = up + "-distilled"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "3"; "--batch"; "4"; "--objective"; "distillation"; "--teacher"; $"taskA={e0}"; "--teacher"; $"taskB={e1}"; "--out"; distilled; "--quiet" ]
            Expect.equal code 0 $"adapt distillation: {err}"
            Expect.equal (JsonNode.Parse(File.ReadAllText(Path.Combine(distilled, "adapt_log.json"))).["objective"].GetValue<string>()) "distillation" "logged"
            let noTeacher = up + "-no-teacher"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--objective"; "distillation"; "--teacher"; $"taskA={e0}"; "--out"; noTeacher; "--quiet" ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "no --teacher for task taskB" "names the task"
            Expect.isFalse (Directory.Exists noTeacher) "nothing written"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--teacher"; $"taskA={e0}"; "--out"; noTeacher; "--quiet" ]
            Expect.equal code 2 "--teacher without distillation"
            Expect.stringContains err "--teacher is only read by --objective distillation" "says why"
            let bad = up + "-bad"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--objective"; "accuracy"; "--out"; bad; "--quiet" ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "--objective: expected entropy, entropy-diversity, distillation or supervised, got 'accuracy'" "names the option and value"
            Expect.isFalse (Directory.Exists bad) "nothing written"
            let json = Path.Combine(root, "eval.json")
            let code, _, err = mergedsl [ "eval"; adapted; "--data"; data; "--json"; json ]
            Expect.equal code 0 $"eval: {err}"
            let j = JsonNode.Parse(File.ReadAllText json)
            for key in [ "taskA"; "taskB"; "average" ] do
                let acc = j.[key].["accuracy"].GetValue<float>()
                Expect.isTrue (acc >= 0.0 && acc <= 1.0) $"{key} accuracy in [0,1]"
            Expect.equal (j.["model_info"].["kind"].GetValue<string>()) "wemoe" "model_info"
        }

        test "`run wemoe` upscales like `upscale wemoe`, and without --base it is a one-line usage error" {
            let _, _, _, baseDir, e0, e1, _, root = onDisk.Value
            let viaRun = Path.Combine(root, "run-wemoe-" + Guid.NewGuid().ToString("N").Substring(0, 6))
            let viaUpscale = viaRun + "-upscale"
            let args = [ "--model"; e0; "--model"; e1; "--set"; "router-depth=0"; "--set"; "seed=3" ]
            let code, out, err = mergedsl ([ "run"; "wemoe"; "--base"; baseDir; "--out"; viaRun ] @ args)
            Expect.equal code 0 $"run wemoe: {err}"
            Expect.stringContains out "upscaled 2 module(s)" "summary"
            let code, _, err = mergedsl ([ "upscale"; "wemoe"; "--base"; baseDir; "--out"; viaUpscale ] @ args)
            Expect.equal code 0 $"upscale wemoe: {err}"
            let weights dir = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"))
            Expect.equal (weights viaRun) (weights viaUpscale) "same upscaled weights"
            let missing = Path.Combine(root, "run-wemoe-nobase")
            let code, _, err = mergedsl ([ "run"; "wemoe"; "--out"; missing ] @ args)
            Expect.equal code 2 "usage error"
            Expect.stringContains err "--base" "names the missing option"
            Expect.isFalse (Directory.Exists missing) "nothing at --out"
        }

        test "bad --set and a missing head are one-line errors with exit codes" {
            let _, _, _, baseDir, e0, _, data, root = onDisk.Value
            let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--out"; Path.Combine(root, "x"); "--set"; "colour=red" ]
            Expect.equal code 2 "usage error"
            Expect.stringContains err "colour" "names the key"
            let code, _, err = mergedsl [ "eval"; baseDir; "--data"; data ]
            Expect.equal code 2 "no heads in the base"
            Expect.stringContains err "no head for task(s) taskA, taskB" "names the tasks"
        }

        test "eval takes heads from other folders with --heads (merged models carry none)" {
            let _, _, _, baseDir, e0, e1, data, _ = onDisk.Value
            let code, out, err = mergedsl [ "eval"; baseDir; "--data"; data; "--heads"; e0; "--heads"; Path.Combine(e1, "heads"); "--json"; "-" ]
            Expect.equal code 0 $"eval: {err}"
            let j = JsonNode.Parse out
            Expect.isNotNull j.["taskA"] "taskA from the first expert's folder"
            Expect.isNotNull j.["taskB"] "taskB from a bare heads folder"
        }

        test "the F# DSL: a rest recipe run by the algebra executor equals the built-in task arithmetic" {
            use _ = torch.NewDisposeScope()
            let cfg, b, experts, _, _, _, _, _ = onDisk.Value
            let bs, es = sources b experts
            let viaDsl = Upscale.upscaleToMoE { Upscale.wemoe with RouterDepth = 0; Rest = Methods.taskArithmetic 0.7 } cfg bs (List.ofSeq es)
            let builtIn = Upscaler.Upscale(cfg, bs, es, UpscaleSpec(RouterDepth = 0, RestLambda = 0.7))
            use _a = viaDsl.Model
            use _b = builtIn.Model
            let x = torch.randn([| 2L; 3L; 8L; 8L |])
            use _ng = torch.no_grad ()
            Expect.isLessThan (maxDiff (viaDsl.Model.forward x) (builtIn.Model.forward x)) 1e-5f "same model"
            let core, _ = Upscale.toCore { Upscale.smile with Modules = [ "*.mlp"; "*.q_proj" ]; Routing = Some(TopP 0.8); Rank = 4 }
            Expect.equal (core.Kind, core.Rank, core.EffectiveRouting) (MoeKind.Smile, 4, RouterSelection.TopPOf 0.8) "toCore"
        }
    ]

/// A tiny byte-vocabulary Llama base, two experts and two tasks' texts on disk, for the decoder MoE commands.
let decoderOnDisk =
    lazy
        (let root = Directory.CreateTempSubdirectory("mergedsl-dmoe-cli-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(root, true) with _ -> ())
         let config intermediate =
             MergeDsl.Core.Models.Decoder.DecoderConfig(
                 Family = MergeDsl.Core.Models.Decoder.DecoderFamily.Llama, VocabSize = 258, HiddenSize = 16, IntermediateSize = intermediate,
                 NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 128,
                 BosTokenId = Nullable 256, EosTokenId = Nullable 257)
         let cfg = config 24
         let save name seed (c: MergeDsl.Core.Models.Decoder.DecoderConfig) =
             use m = MergeDsl.Core.Models.Decoder.DecoderModelFolder.Random(c, seed, 0.3)
             let dir = Path.Combine(root, name)
             MergeDsl.Core.Models.Decoder.DecoderModelFolder.Save(dir, m, MergeDsl.Core.Models.Decoder.DecoderModelFolder.ByteTokenizerFiles())
             dir
         let baseDir = save "lm-base" 1L cfg
         let e0 = save "prose" 2L cfg
         let e1 = save "digits" 3L cfg
         let wide = save "wide" 4L (config 32)
         let text = Path.Combine(root, "text")
         Directory.CreateDirectory text |> ignore
         File.WriteAllText(Path.Combine(text, "prose.txt"), String.replicate 6 "The quick brown fox jumps over the lazy dog. ")
         File.WriteAllText(Path.Combine(text, "digits.txt"), String.Join(" ", [ for i in 0 .. 80 -> string (i * 7919 % 1000) ]))
         let sample = Path.Combine(root, "sample.txt")
         File.WriteAllText(sample, "The lazy fox, 42.")
         baseDir, e0, e1, wide, text, sample, root)

let private decoderScore (folder: string) (sample: string) =
    let code, out, err = mergedsl [ "score"; folder; "--text"; sample; "--json" ]
    Expect.equal code 0 $"score {folder}: {err}"
    System.Text.Json.JsonDocument.Parse(out).RootElement.GetProperty("bits_per_byte").GetDouble()

let private oneLineFailure (code: int, _: string, err: string) (fragment: string) =
    Expect.notEqual code 0 "non-zero exit"
    Expect.stringContains err fragment "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"

[<Tests>]
let decoderTests =
    testSequenced <| testList "decoder MoE command line" [
        test "upscale wemoe|e-wemoe|smile on Llama experts, then score and generate the MoE folder" {
            let baseDir, e0, e1, _, _, sample, root = decoderOnDisk.Value
            let baseBpb = decoderScore baseDir sample
            for m in [ "wemoe"; "e-wemoe"; "smile" ] do
                let out = Path.Combine(root, $"lm-{m}")
                let code, stdout, err = mergedsl [ "upscale"; m; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; out; "--json" ]
                Expect.equal code 0 $"{m}: {err}"
                Expect.stringContains stdout "model.layers.1.mlp" $"{m}: sites"
                let bpb = decoderScore out sample
                Expect.isTrue (Double.IsFinite bpb && bpb > 0.0) $"{m}: bits per byte {bpb}"
                Expect.notEqual bpb baseBpb $"{m}: not the base model"
                use direct = MergeDsl.Core.Models.Decoder.DecoderModelFolder.Load out
                let ids = ResizeArray [ 256 ]
                ids.AddRange(Text.Encoding.UTF8.GetBytes(File.ReadAllText sample) |> Seq.map int)
                let s = MergeDsl.Core.Models.Decoder.DecoderScoring.Score(direct, ResizeArray [ ids :> Collections.Generic.IReadOnlyList<int> ])[0]
                Expect.floatClose Accuracy.high bpb (s.BitsPerByte(int64 (Text.Encoding.UTF8.GetByteCount(File.ReadAllText sample)))) $"{m}: as the runtime scores it"
                let code, gen, err = mergedsl [ "generate"; out; "--prompt"; "The"; "--max-new-tokens"; "5"; "--json" ]
                Expect.equal code 0 $"{m} generate: {err}"
                Expect.stringContains gen "continuation" $"{m}: generated"
        }

        test "adapt --text-data: entropy and distillation for routers, layer-wise AdaMerging; outputs score" {
            let baseDir, e0, e1, _, text, sample, root = decoderOnDisk.Value
            let moe = Path.Combine(root, "lm-wemoe")
            if not (Directory.Exists moe) then
                let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; moe ]
                Expect.equal code 0 err
            let common = [ "--text-data"; text; "--steps"; "4"; "--batch"; "2"; "--seq-len"; "16"; "--lr"; "0.01"; "--quiet" ]
            let runs =
                [ "entropy", moe, [ "adapt"; moe; "--out"; Path.Combine(root, "lm-adapted-entropy") ] @ common
                  "distillation", moe,
                  [ "adapt"; moe; "--out"; Path.Combine(root, "lm-adapted-distill"); "--objective"; "distillation"
                    "--teacher"; $"prose={e0}"; "--teacher"; $"digits={e1}" ] @ common
                  "adamerging", baseDir,
                  [ "adapt"; baseDir; "--method"; "adamerging"; "--expert"; e0; "--expert"; e1; "--out"; Path.Combine(root, "lm-adamerging") ] @ common ]
            for name, _, args in runs do
                let code, out, err = mergedsl args
                Expect.equal code 0 $"{name}: {err}"
                let outDir = args[List.findIndex ((=) "--out") args + 1]
                let log = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapt_log.json")))
                Expect.equal (log["loss"].AsArray().Count) 4 $"{name}: four steps logged"
                Expect.equal (log["sequence_length"].GetValue<int>()) 16 $"{name}: window length logged"
                Expect.isTrue (Double.IsFinite(decoderScore outDir sample)) $"{name}: the output scores"
                ignore out
            let cfg = File.ReadAllText(Path.Combine(root, "lm-adamerging", "config.json"))
            Expect.stringContains cfg "\"model_type\": \"llama\"" "AdaMerging writes a plain Llama"
        }

        test "bad input to the decoder paths: one line, non-zero exit, nothing written" {
            let baseDir, e0, _, wide, text, _, root = decoderOnDisk.Value
            let out = Path.Combine(root, "never")
            oneLineFailure (mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; wide; "--out"; out ]) "intermediate_size 32 vs 24"
            oneLineFailure (mergedsl [ "upscale"; "smile"; "--base"; baseDir; "--model"; e0; "--out"; out; "--set"; "modules=*.self_attn.q_proj" ])
                "'*.self_attn.q_proj' matches no upscalable decoder module"
            let gpt2 = Path.Combine(root, "gpt2")
            Directory.CreateDirectory gpt2 |> ignore
            File.WriteAllText(Path.Combine(gpt2, "config.json"), """{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}""")
            oneLineFailure (mergedsl [ "upscale"; "wemoe"; "--base"; gpt2; "--model"; e0; "--out"; out ]) "GPT2LMHeadModel"
            oneLineFailure (mergedsl [ "adapt"; baseDir; "--data"; text; "--out"; out; "--quiet" ]) "is a language model; give its per-task text with --text-data"
            oneLineFailure (mergedsl [ "adapt"; baseDir; "--text-data"; text; "--out"; out; "--quiet" ]) "not an upscaled decoder"
            oneLineFailure (mergedsl [ "adapt"; baseDir; "--out"; out; "--quiet" ]) "--text-data DIR"
            let _, _, _, baseClip, _, _, data, _ = onDisk.Value
            oneLineFailure (mergedsl [ "adapt"; baseClip; "--text-data"; text; "--out"; out; "--quiet" ]) "not a language model"
            oneLineFailure (mergedsl [ "adapt"; Path.Combine(root, "lm-wemoe"); "--text-data"; text; "--seq-len"; "500"; "--out"; out; "--quiet"; "--steps"; "1" ])
                "max_position_embeddings 128"
            ignore data
            Expect.isFalse (Directory.Exists out) "nothing written"
        }
    ]
