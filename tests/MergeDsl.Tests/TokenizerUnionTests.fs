/// mergekit's tokenizer handling: union of two tiny BPE tokenizers with different tokens and added tokens,
/// embedding and lm_head rows realigned and filled as mergekit fills them (hand-checked), a named model's
/// tokenizer, padding, chat templates, tied embeddings, and the refused keys.
module MergeDsl.Tests.TokenizerUnionTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Tests.CheckpointFixtures

let private mergedsl = MergeDsl.Tests.CliHarness.mergedsl
let private loadAll = MergeDsl.Tests.CliTests.loadAll

let private added (id: int) (content: string) (special: bool) =
    $"""{{"id": {id}, "content": "{content}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": {(if special then "false" else "true")}, "special": {(if special then "true" else "false")}}}"""

/// A BPE tokenizer.json with `vocab` (token, id) and added tokens (id, content, special).
let private tokenizerJson (vocab: (string * int) list) (addedTokens: (int * string * bool) list) =
    let v = String.Join(", ", vocab |> List.map (fun (t, i) -> $"\"{t}\": {i}"))
    let a = String.Join(", ", addedTokens |> List.map (fun (i, c, s) -> added i c s))
    $"""{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{a}], "normalizer": null, "pre_tokenizer": null,
  "post_processor": null, "decoder": null, "model": {{"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
  "byte_fallback": false, "vocab": {{{v}}}, "merges": []}}}}"""

// A: a b c ab, <s> <|im_start|>; B: a c b d (another order, a new token), <s> <tool>.
let private vocabA = [ "a", 0; "b", 1; "c", 2; "ab", 3 ], [ 4, "<s>", true; 5, "<|im_start|>", true ]
let private vocabB = [ "a", 0; "c", 1; "b", 2; "d", 3 ], [ 4, "<s>", true; 5, "<tool>", true ]

let private llama tied =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 6, HiddenSize = 8, IntermediateSize = 12, NumHiddenLayers = 2,
                  NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 4, MaxPositionEmbeddings = 32, RopeTheta = 10000.0,
                  TieWordEmbeddings = tied)

let private model (dir: TempDir) name tied seed (vocab, addedTokens) (template: string option) =
    use m = DecoderModelFolder.Random(llama tied, seed, 0.3)
    let cfg =
        match template with
        | Some t -> $"""{{"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "{t}"}}"""
        | None -> """{"tokenizer_class": "PreTrainedTokenizerFast"}"""
    DecoderModelFolder.Save(dir.File name, m, readOnlyDict [ "tokenizer.json", tokenizerJson vocab addedTokens; "tokenizer_config.json", cfg ])
    loadAll (dir.File name)

let private json (path: string) = JsonNode.Parse(File.ReadAllText path).AsObject()

let private run (dir: TempDir) (yaml: string) (out: string) =
    let path = dir.File "config.yml"
    File.WriteAllText(path, yaml)
    let code, _, err = mergedsl [ "run"; path; "--out"; out; "--quiet" ]
    Expect.equal code 0 $"exit code ({err})"
    loadAll out

let private f64 (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64)
let private row (t: torch.Tensor) (i: int) = f64(t).select(0, int64 i)

let private close (a: torch.Tensor) (b: torch.Tensor) what =
    let d = f64(a).sub(f64 b).abs().max().item<float>()
    Expect.isLessThanOrEqual d 1e-6 $"{what} (max |diff| {d})"

let private linear = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 3}\n"

[<Tests>]
let tests =
    testSequenced <| testList "Tokenizer union" [
        test "union of two tokenizers: vocabulary, files, and every embedding/lm_head row by hand" {
            use dir = new TempDir()
            let a = model dir "a" false 1L vocabA None
            let b = model dir "b" false 2L vocabB None
            let template = "{% for m in messages %}{{ m.content }}{% endfor %}"
            let out = dir.File "out"
            let got = run dir (linear + $"tokenizer_source: union\nchat_template: \"{template}\"\n") out
            // Output ids: A's 0-5, then B's new ordinary token d (6), then B's new added token <tool> (7).
            let tok = json (Path.Combine(out, "tokenizer.json"))
            let addedOut = tok["added_tokens"].AsArray() |> Seq.map (fun e -> e["id"].GetValue<int>(), e["content"].GetValue<string>(), e["special"].GetValue<bool>()) |> List.ofSeq
            Expect.equal addedOut [ 4, "<s>", true; 5, "<|im_start|>", true; 6, "d", false; 7, "<tool>", true ] "added tokens with ids"
            let tcfg = json (Path.Combine(out, "tokenizer_config.json"))
            let decoder = tcfg["added_tokens_decoder"]
            let seventh = decoder["7"]
            Expect.equal (seventh["content"].GetValue<string>()) "<tool>" "added_tokens_decoder has <tool> at 7"
            Expect.equal (tcfg["chat_template"].GetValue<string>()) template "chat_template written"
            let cfg = json (Path.Combine(out, "config.json"))
            Expect.equal (cfg["vocab_size"].GetValue<int>()) 8 "vocab_size 8"
            for name in [ "model.embed_tokens.weight"; "lm_head.weight" ] do
                let e, ea, eb = got[name], a[name], b[name]
                Expect.sequenceEqual e.shape [| 8L; 8L |] $"{name}: 8 rows"
                let mix (x: torch.Tensor) (y: torch.Tensor) = x.mul(torch.tensor 0.25).add(y.mul(torch.tensor 0.75))
                // row i = ¼·A's aligned row + ¾·B's aligned row; a model lacking a token takes the only other model's row.
                close (row e 0) (mix (row ea 0) (row eb 0)) $"{name} a: A0, B0"
                close (row e 1) (mix (row ea 1) (row eb 2)) $"{name} b: A1, B2 (B's order differs)"
                close (row e 2) (mix (row ea 2) (row eb 1)) $"{name} c: A2, B1"
                close (row e 3) (row ea 3) $"{name} ab: only A has it, B's row is A's"
                close (row e 4) (mix (row ea 4) (row eb 4)) $"{name} <s>"
                close (row e 5) (row ea 5) $"{name} <|im_start|>: A's"
                close (row e 6) (row eb 3) $"{name} d: B's row 3 for both"
                close (row e 7) (row eb 5) $"{name} <tool>: B's row 5 for both"
            use loaded = DecoderModelFolder.Load out
            Expect.equal loaded.Config.VocabSize 8 "the runtime loads the resized model"
        }

        test "three vocabularies: a token the base has comes from the base, else the mean of its holders" {
            use dir = new TempDir()
            let write name vocab addedTokens =
                Directory.CreateDirectory(dir.File name) |> ignore
                File.WriteAllText(Path.Combine(dir.File name, "tokenizer.json"), tokenizerJson vocab addedTokens)
                TokenizerVocabulary.Load(dir.File name)
            let baseV = write "base" [ "a", 0; "b", 1 ] []
            let v1 = write "m1" [ "a", 0; "x", 1 ] []
            let v2 = write "m2" [ "b", 0; "x", 1; "a", 2 ] []
            let union = VocabularyUnion.Build([| baseV; v1; v2 |], Nullable 0, TokenizerSourceKind.Union)
            Expect.sequenceEqual union.Tokens [ "a"; "b"; "x" ] "base's tokens, then x"
            // Row r of model m holds 100·m + r (one column).
            let mat m n = torch.tensor([| for r in 0 .. n - 1 -> float32 (100 * m + r) |]).reshape(int64 n, 1L)
            let mats = [| mat 0 2; mat 1 2; mat 2 3 |]
            let aligned m = (union.Align(m, mats)).flatten().data<float32>().ToArray()
            Expect.sequenceEqual (aligned 0) [| 0.0f; 1.0f; 151.0f |] "base lacks x: mean of m1's 101 and m2's 201"
            Expect.sequenceEqual (aligned 1) [| 100.0f; 1.0f; 101.0f |] "m1 lacks b: base and m2 have it, the base's row 1"
            Expect.sequenceEqual (aligned 2) [| 202.0f; 200.0f; 201.0f |] "m2 has all three, reordered"
        }

        test "a named model's tokenizer: its vocabulary and files, the others' rows realigned to it" {
            use dir = new TempDir()
            let a = model dir "a" false 3L vocabA None
            let b = model dir "b" false 4L vocabB None
            let out = dir.File "out"
            let got = run dir (linear + "tokenizer_source: b\n") out
            Expect.equal (File.ReadAllText(Path.Combine(out, "tokenizer.json"))) (File.ReadAllText(dir.File "b/tokenizer.json")) "B's tokenizer.json"
            let e, ea, eb = got["model.embed_tokens.weight"], a["model.embed_tokens.weight"], b["model.embed_tokens.weight"]
            Expect.sequenceEqual e.shape [| 6L; 8L |] "B's 6 rows"
            let mix (x: torch.Tensor) (y: torch.Tensor) = x.mul(torch.tensor 0.25).add(y.mul(torch.tensor 0.75))
            close (row e 1) (mix (row ea 2) (row eb 1)) "B's id 1 is c: A's row 2"
            close (row e 3) (row eb 3) "d: only B"
            close (row e 5) (row eb 5) "<tool>: only B"
        }

        test "tied embeddings with a union: the single matrix is resized, no lm_head; padding rows are the mean" {
            use dir = new TempDir()
            let a = model dir "a" true 5L vocabA (Some "{{ bos }}{% for m in messages %}{{ m }}{% endfor %}")
            model dir "b" true 6L vocabB None |> ignore
            let out = dir.File "out"
            let got = run dir (linear + "tokenizer:\n  source: union\n  pad_to_multiple_of: 5\nchat_template: auto\n") out
            Expect.isFalse (got.ContainsKey "lm_head.weight") "still tied: no lm_head"
            let e = got["model.embed_tokens.weight"]
            Expect.sequenceEqual e.shape [| 10L; 8L |] "8 tokens padded to 10 rows"
            let mean = f64(e).narrow(0L, 0L, 8L).mean([| 0L |])
            close (row e 8) mean "padding row 8 = mean of the vocabulary's rows"
            close (row e 9) mean "padding row 9"
            close (row e 3) (row a["model.embed_tokens.weight"] 3) "ab: A's row"
            let cfg = json (Path.Combine(out, "config.json"))
            Expect.equal (cfg["vocab_size"].GetValue<int>()) 10 "vocab_size = rows"
            Expect.isTrue (cfg["tie_word_embeddings"].GetValue<bool>()) "tied"
            let tcfg = json (Path.Combine(out, "tokenizer_config.json"))
            Expect.equal (tcfg["chat_template"].GetValue<string>()) "{{ bos }}{% for m in messages %}{{ m }}{% endfor %}" "auto: the only template among the models"
            use loaded = DecoderModelFolder.Load out
            Expect.isTrue loaded.Config.TieWordEmbeddings "loads tied"
        }

        test "per-token settings: configured rows where a model lacks the token, forced rows everywhere, added tokens (by hand)" {
            use dir = new TempDir()
            let write name vocab addedTokens =
                Directory.CreateDirectory(dir.File name) |> ignore
                File.WriteAllText(Path.Combine(dir.File name, "tokenizer.json"), tokenizerJson vocab addedTokens)
                TokenizerVocabulary.Load(dir.File name)
            let baseV = write "base" [ "a", 0; "b", 1; "y", 2 ] []
            let v1 = write "m1" [ "a", 0; "x", 1; "y", 2 ] []
            let settings =
                [| TokenEmbeddingSetting("x", TokenEmbeddingKind.Zero)
                   TokenEmbeddingSetting("a", TokenEmbeddingKind.ModelToken, 1, SourceToken = "x", Force = true)
                   TokenEmbeddingSetting("new", TokenEmbeddingKind.ModelToken, 0, SourceTokenId = Nullable 1)
                   TokenEmbeddingSetting("y", TokenEmbeddingKind.Model, 1) |]
            let union = VocabularyUnion.Build([| baseV; v1 |], Nullable 0, TokenizerSourceKind.Union, tokens = settings)
            Expect.sequenceEqual union.Tokens [ "a"; "b"; "y"; "x"; "new" ] "base's tokens, m1's x, then the configured new token"
            Expect.isTrue union.AddsTokens "the vocabulary grew"
            // Row r of model m holds 100·m + r (one column).
            let mat m n = torch.tensor([| for r in 0 .. n - 1 -> float32 (100 * m + r) |]).reshape(int64 n, 1L)
            let mats = [| mat 0 3; mat 1 3 |]
            let aligned m = (union.Align(m, mats)).flatten().data<float32>().ToArray()
            // a: forced to m1's row of x (101) in both; b: m1 lacks it, the only holder is the base (1);
            // y: both have it, their own rows (not forced); x: the base lacks it, zero (configured), m1 keeps 101;
            // new: nobody has it, the base's row 1.
            Expect.sequenceEqual (aligned 0) [| 101.0f; 1.0f; 2.0f; 0.0f; 1.0f |] "base"
            Expect.sequenceEqual (aligned 1) [| 101.0f; 1.0f; 102.0f; 101.0f; 1.0f |] "m1"
            let files = union.OutputFiles(null, null)
            let addedOut = (JsonNode.Parse(files["tokenizer.json"]).["added_tokens"]).AsArray() |> Seq.map (fun e -> e["content"].GetValue<string>(), e["special"].GetValue<bool>()) |> List.ofSeq
            Expect.equal addedOut [ "x", false; "new", false ] "x and the configured token are added, not special"
            let fails (s: TokenEmbeddingSetting) fragment =
                try
                    VocabularyUnion.Build([| baseV; v1 |], Nullable 0, TokenizerSourceKind.Base, tokens = [| s |]) |> ignore
                    failtest "accepted"
                with :? FormatException as e -> Expect.stringContains e.Message fragment "names the fault"
            fails (TokenEmbeddingSetting("b", TokenEmbeddingKind.Model, 1)) "tokenizer.tokens 'b': source model"
            fails (TokenEmbeddingSetting("b", TokenEmbeddingKind.ModelToken, 1, SourceToken = "zz")) "has no token 'zz'"
            // Base vocabulary: only the configured token is added.
            let b = VocabularyUnion.Build([| baseV; v1 |], Nullable 0, TokenizerSourceKind.Base, tokens = [| TokenEmbeddingSetting("x", TokenEmbeddingKind.Model, 1, Force = true) |])
            Expect.sequenceEqual b.Tokens [ "a"; "b"; "y"; "x" ] "base + x"
            Expect.sequenceEqual ((b.Align(0, mats)).flatten().data<float32>().ToArray()) [| 0.0f; 1.0f; 2.0f; 101.0f |] "x from m1 in the base"
        }

        test "tokenizer.tokens from YAML end to end; slow tokenizer files: dropped by a union, kept for base, taken from a named model" {
            use dir = new TempDir()
            let a = model dir "a" false 9L vocabA None
            let b = model dir "b" false 10L vocabB None
            File.WriteAllBytes(dir.File "a/tokenizer.model", [| 1uy; 2uy; 3uy |])
            File.WriteAllBytes(dir.File "b/tokenizer.model", [| 7uy; 8uy |])
            let tokens =
                "tokenizer:\n  source: union\n  tokens:\n    <tool>:\n      source: {kind: zero}\n    d:\n      source: {kind: model_token, model: a, token: ab}\n      force: true\n    <new>:\n      source: {kind: model_token, model: b, token_id: 2}\n"
            let out = dir.File "out-tokens"
            let got = run dir (linear + tokens) out
            Expect.isFalse (File.Exists(Path.Combine(out, "tokenizer.model"))) "a union writes no stale tokenizer.model (as mergekit)"
            let e, ea, eb = got["model.embed_tokens.weight"], a["model.embed_tokens.weight"], b["model.embed_tokens.weight"]
            Expect.sequenceEqual e.shape [| 9L; 8L |] "8 union tokens + <new>"
            let mix (x: torch.Tensor) (y: torch.Tensor) = x.mul(torch.tensor 0.25).add(y.mul(torch.tensor 0.75))
            close (row e 6) (row ea 3) "d: forced to A's row of ab in both models"
            // <tool> (id 7): B has it and keeps its row; A lacks it and gets zeros (configured).
            close (row e 7) (row eb 5 |> fun r -> r.mul(torch.tensor 0.75)) "<tool>: ¼·0 + ¾·B's row"
            close (row e 8) (row eb 2) "<new>: B's row 2 in both"
            close (row e 3) (row ea 3) "ab unchanged"
            close (row e 0) (mix (row ea 0) (row eb 0)) "a unchanged"
            let baseOut = dir.File "out-base"
            run dir (linear + "tokenizer_source: base\n") baseOut |> ignore
            Expect.sequenceEqual (File.ReadAllBytes(Path.Combine(baseOut, "tokenizer.model"))) [| 1uy; 2uy; 3uy |] "base: its tokenizer.model is kept"
            let bOut = dir.File "out-b"
            run dir (linear + "tokenizer_source: b\n") bOut |> ignore
            Expect.sequenceEqual (File.ReadAllBytes(Path.Combine(bOut, "tokenizer.model"))) [| 7uy; 8uy |] "a named model: its tokenizer.model"
        }

        test "refused tokenizer keys are one-line errors before any tensor is read" {
            use dir = new TempDir()
            model dir "a" false 7L vocabA None |> ignore
            model dir "b" false 8L vocabB None |> ignore
            for extra, fragment in
                [ "embed_slerp: true\n", "embed_slerp: not supported"
                  "chat_template: chatml\n", "chat_template: 'chatml' is not supported"
                  "tokenizer:\n  source: union\n  tokens:\n    <tool>: {force: true}\n", "tokenizer.tokens.<tool>: 'source' is missing"
                  "tokenizer:\n  source: union\n  tokens:\n    <tool>: {source: {kind: copy}}\n", "unknown kind 'copy'"
                  "tokenizer:\n  source: union\n  tokens:\n    <tool>: {source: {kind: model_token, model: a}}\n", "exactly one of token_id and token"
                  "tokenizer:\n  source: union\n  tokens:\n    <tool>: {source: a}\n", "tokenizer.tokens '<tool>': source model"
                  "tokenizer_source: union\ntokenizer:\n  source: base\n", "give either tokenizer_source or tokenizer"
                  "tokenizer_source: nowhere\n", "tokenizer_source: nowhere: no such model folder or file" ] do
                let path = dir.File "config.yml"
                File.WriteAllText(path, linear + extra)
                let out = dir.File "out-bad"
                let code, _, err = mergedsl [ "run"; path; "--out"; out; "--quiet" ]
                Expect.equal code 2 $"usage error for {extra} ({err})"
                Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
                Expect.stringContains err fragment "names the fault"
                Expect.isFalse (Directory.Exists out) "nothing written"
        }
    ]
