/// `mergedsl score` and `mergedsl generate` on small decoder folders written here.
module MergeDsl.Tests.DecoderCliTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Tests.CliHarness

let private byteConfig maxPos =
    DecoderConfig(Family = DecoderFamily.Qwen2, VocabSize = ByteTokenizer.VocabSize, HiddenSize = 16, IntermediateSize = 24,
                  NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = maxPos,
                  QkvBias = true, TieWordEmbeddings = true, EosTokenId = Nullable ByteTokenizer.Eos)

let private withModel (zero: bool) (f: string -> string -> unit) =
    let dir = Path.Combine(Path.GetTempPath(), "mergedsl-llmcli-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    try
        use m = DecoderModelFolder.Random(byteConfig 64, 4L, 0.3)
        if zero then
            use _ng = torch.no_grad ()
            for p in m.parameters () do p.zero_() |> ignore
        let folder = Path.Combine(dir, "model")
        DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
        f dir folder
    finally
        Directory.Delete(dir, true)

let private expectOneLineFailure (code, out: string, err: string) (fragment: string) =
    Expect.notEqual code 0 "non-zero exit"
    Expect.stringContains err fragment "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
    ignore out

[<Tests>]
let tests =
    testSequenced <| testList "decoder command line" [
        test "score --json: a zero-weight model costs log2(258) bits per byte; a random one matches the runtime" {
            withModel true (fun dir folder ->
                let text = Path.Combine(dir, "t.txt")
                File.WriteAllText(text, "Grüße\n")
                let code, out, err = mergedsl [ "score"; folder; "--text"; text; "--json" ]
                Expect.equal code 0 err
                let j = JsonDocument.Parse(out).RootElement
                Expect.equal (j.GetProperty("bytes").GetInt64()) 8L "UTF-8 bytes"
                Expect.equal (j.GetProperty("tokens").GetInt32()) 8 "one byte token each, after BOS"
                Expect.floatClose Accuracy.high (j.GetProperty("bits_per_byte").GetDouble()) (Math.Log(258.0, 2.0)) "uniform"
                Expect.floatClose Accuracy.high (j.GetProperty("mean_log_likelihood").GetDouble()) (-Math.Log 258.0) "ln(1/258)")
            withModel false (fun dir folder ->
                let text = Path.Combine(dir, "t.txt")
                File.WriteAllText(text, "abc")
                let code, out, err = mergedsl [ "score"; folder; "--text"; text; "--json" ]
                Expect.equal code 0 err
                let bpb = JsonDocument.Parse(out).RootElement.GetProperty("bits_per_byte").GetDouble()
                use m = DecoderModelFolder.Load folder
                let s = DecoderScoring.Score(m, ResizeArray [ [| 256; 97; 98; 99 |] :> Collections.Generic.IReadOnlyList<int> ])[0]
                Expect.floatClose Accuracy.high bpb (s.BitsPerByte 3L) "same as the runtime"
                let code, out, _ = mergedsl [ "score"; folder; "--text"; text ]
                Expect.equal code 0 "text output"
                Expect.stringContains out "bits per byte" "human output")
        }

        test "generate: greedy output is the runtime's, sampling repeats with a seed" {
            withModel false (fun _ folder ->
                let code, out, err = mergedsl [ "generate"; folder; "--prompt"; "ab"; "--max-new-tokens"; "6"; "--json" ]
                Expect.equal code 0 err
                let j = JsonDocument.Parse(out).RootElement
                let tokens = [ for t in j.GetProperty("tokens").EnumerateArray() -> t.GetInt32() ]
                use m = DecoderModelFolder.Load folder
                let expected = DecoderGeneration.Generate(m, [| 256; 97; 98 |], GenerationOptions(MaxNewTokens = 6, StopAtEos = Nullable 257)).Tokens
                Expect.sequenceEqual tokens expected "greedy tokens"
                let sample seed = mergedsl [ "generate"; folder; "--prompt"; "ab"; "--max-new-tokens"; "8"; "--temperature"; "1.3"; "--top-k"; "20"; "--seed"; seed; "--json" ]
                let _, a, _ = sample "5"
                let _, b, _ = sample "5"
                Expect.equal a b "same seed, same output")
        }

        test "bad inputs fail with one line naming the fault" {
            withModel false (fun dir folder ->
                let text = Path.Combine(dir, "t.txt")
                File.WriteAllText(text, String('x', 100))
                expectOneLineFailure (mergedsl [ "score"; folder; "--text"; text ]) "t.txt: the text is 101 tokens, longer than max_position_embeddings 64"
                expectOneLineFailure (mergedsl [ "score"; folder; "--text"; Path.Combine(dir, "none.txt") ]) "none.txt: no such text file"
                File.WriteAllText(Path.Combine(dir, "empty.txt"), "")
                expectOneLineFailure (mergedsl [ "score"; folder; "--text"; Path.Combine(dir, "empty.txt") ]) "empty.txt: the text is empty"
                File.WriteAllBytes(Path.Combine(dir, "bin.txt"), [| 0xffuy; 0xfeuy |])
                expectOneLineFailure (mergedsl [ "score"; folder; "--text"; Path.Combine(dir, "bin.txt") ]) "bin.txt: not UTF-8 text"
                expectOneLineFailure (mergedsl [ "generate"; folder; "--prompt"; "a"; "--temperature"; "-1" ]) "temperature"
                expectOneLineFailure (mergedsl [ "generate"; folder; "--prompt"; "a"; "--top-k"; "-3" ]) "top-k"
                expectOneLineFailure (mergedsl [ "generate"; folder; "--prompt"; "a"; "--max-new-tokens"; "70" ]) "longer than max_position_embeddings 64"
                let cfg = Path.Combine(folder, "config.json")
                File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("Qwen2ForCausalLM", "GPT2LMHeadModel"))
                expectOneLineFailure (mergedsl [ "generate"; folder; "--prompt"; "a" ]) "config.json: architectures [GPT2LMHeadModel] is not a supported decoder"
                File.Delete(Path.Combine(folder, "model.safetensors"))
                expectOneLineFailure (mergedsl [ "score"; folder; "--text"; text ]) "config.json"
                expectOneLineFailure (mergedsl [ "score"; Path.Combine(dir, "nope"); "--text"; text ]) "nope: no such model folder")
        }

        test "bench decoder: the tiny shape reports tokens/s for each length" {
            let code, out, err = mergedsl [ "bench"; "decoder"; "--size"; "tiny"; "--lengths"; "4,8"; "--json" ]
            Expect.equal code 0 err
            let j = JsonDocument.Parse(out).RootElement[0]
            Expect.equal (j.GetProperty("shape").GetString()) "tiny" "shape"
            Expect.equal (j.GetProperty("generation").GetArrayLength()) 2 "two lengths"
            Expect.isGreaterThan (j.GetProperty("score_tokens_per_second").GetDouble()) 0.0 "scoring rate"
            expectOneLineFailure (mergedsl [ "bench"; "decoder"; "--size"; "huge" ]) "--size 'huge'"
            expectOneLineFailure (mergedsl [ "bench"; "decoder"; "--lengths"; "4,x" ]) "'x' is not a positive integer"
            expectOneLineFailure (mergedsl [ "bench"; "decoder"; "--threads"; "0" ]) "--threads 0 must be at least 1"
        }
    ]
