/// Tokenizers of decoder models: the byte-level tokenizer and its tokenizer.json, and checkpoints' own
/// tokenizers through Microsoft.ML.Tokenizers, on small files written here.
module MergeDsl.Tests.TokenizerTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Tests.TestSupport

let private tempDir () = tempDir "tok"

let private withFolder (files: (string * string) list) (f: string -> unit) =
    let dir = tempDir ()
    try
        for name, text in files do File.WriteAllText(Path.Combine(dir, name), text)
        f dir
    finally
        Directory.Delete(dir, true)

/// A GPT-2 style byte-level BPE tokenizer.json: a, b, Ġ (the space byte), and the merges a+b, Ġ+ab.
let private bpeJson (preTokenizer: string) (postProcessor: string) =
    """{"version": "1.0", "normalizer": null,
          "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": true}, {"id": 6, "content": "<|begin_of_text|>", "special": true}],
          "pre_tokenizer": """ + preTokenizer + """, "post_processor": """ + postProcessor + """, "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4}, "merges": ["a b", ["Ġ", "ab"]]}}"""

let private gpt2Pre = """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"""

[<Tests>]
let tests =
    testList "decoder tokenizers" [
        test "byte tokenizer: one id per UTF-8 byte, BOS 256, EOS 257, decode inverts" {
            let t = ByteTokenizer()
            Expect.sequenceEqual (t.Encode "héllo") [ 104; 195; 169; 108; 108; 111 ] "é is two bytes"
            Expect.equal (t.Decode [ 256; 104; 195; 169; 257 ]) "hé" "specials left out"
            Expect.equal (t.BosId, t.EosId) (Nullable 256, Nullable 257) "specials"
        }

        test "byte tokenizer.json: HF BPE form with the byte-level alphabet, no merges, and it loads back" {
            let root = JsonNode.Parse(ByteTokenizer.ToTokenizerJson()).AsObject()
            let model = root["model"].AsObject()
            let vocab = model["vocab"].AsObject()
            let at (key: string) = vocab[key].GetValue<int>()
            Expect.equal vocab.Count 256 "256 byte entries"
            Expect.equal (at "Ġ") 32 "space is Ġ (U+0120)"
            Expect.equal (at "!") 33 "printable ASCII stands for itself"
            Expect.equal (at "\u0100") 0 "byte 0 is U+0100"
            Expect.equal (at "\u00ff") 255 "ÿ is itself"
            Expect.equal (at "\u0143") 173 "soft hyphen (173) is the 68th remapped byte, U+0143"
            let merges = model["merges"].AsArray()
            Expect.equal merges.Count 0 "no merges"
            let pre = root["pre_tokenizer"].AsObject()
            let useRegex = pre["use_regex"].GetValue<bool>()
            Expect.isFalse useRegex "no regex split"
            withFolder [ "tokenizer.json", ByteTokenizer.ToTokenizerJson(); "tokenizer_config.json", ByteTokenizer.ToTokenizerConfigJson() ] (fun dir ->
                let t = TokenizerFiles.Load dir
                Expect.isTrue (t :? ByteTokenizer) "recognised as the byte tokenizer"
                Expect.stringContains t.Source "tokenizer.json" "source")
        }

        test "the byte tokenizer.json read by Microsoft.ML.Tokenizers' BPE gives the same ids (the form is a plain byte-level BPE)" {
            // Renaming BOS makes the file not this project's exact form, so the generic BPE path reads it.
            let json = ByteTokenizer.ToTokenizerJson().Replace("\"<s>\"", "\"<bos>\"")
            withFolder [ "tokenizer.json", json ] (fun dir ->
                let t = TokenizerFiles.Load dir
                Expect.isTrue (t :? LibraryTokenizer) "generic BPE"
                let text = "Grüße, 世界!\n\ttabs  and  spaces \u0000"
                Expect.sequenceEqual (t.Encode text) (ByteTokenizer().Encode text) "same ids"
                Expect.equal (t.Decode(t.Encode text)) text "round trip")
        }

        test "byte-level BPE tokenizer.json through Microsoft.ML.Tokenizers: hand-checked ids" {
            withFolder [ "tokenizer.json", bpeJson gpt2Pre "null"; "tokenizer_config.json", """{"eos_token": "<|endoftext|>"}""" ] (fun dir ->
                let t = TokenizerFiles.Load dir
                // "ab ab" splits into "ab" and " ab"; a+b merges first, then Ġ+ab.
                Expect.sequenceEqual (t.Encode "ab ab") [ 3; 4 ] "ab, Ġab"
                Expect.sequenceEqual (t.Encode "ba") [ 1; 0 ] "no merge for b+a"
                Expect.equal (t.Decode [ 3; 4; 5 ]) "ab ab" "decode, EOS left out"
                Expect.equal (t.BosId, t.EosId) (Nullable(), Nullable 5) "no BOS template; EOS from tokenizer_config.json")
        }

        test "Llama 3 style tokenizer.json: regex Split + ByteLevel, BOS from the TemplateProcessing post-processor" {
            let pre = """{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": " ?[a-z]+"}, "behavior": "Isolated", "invert": false},
                                                                   {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}"""
            let post = """{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {}}"""
            withFolder [ "tokenizer.json", bpeJson pre post ] (fun dir ->
                let t = TokenizerFiles.Load dir
                Expect.sequenceEqual (t.Encode "ab abba") [ 3; 4; 1; 0 ] "' abba' is one piece: Ġ a b b a → Ġ ab b a (a+b, first pair) → Ġab b a"
                Expect.equal t.BosId (Nullable 6) "BOS from the template")
        }

        test "tiktoken rank file (tokenizer.model) through Microsoft.ML.Tokenizers: hand-checked ids" {
            let line (s: string) rank = Convert.ToBase64String(Encoding.UTF8.GetBytes s) + " " + string rank
            let ranks = String.Join("\n", [ line "a" 0; line "b" 1; line "ab" 2; line " " 3 ]) + "\n"
            withFolder [ "tokenizer.model", ranks; "config.json", "{}" ] (fun dir ->
                let t = TokenizerFiles.Load dir
                // cl100k splits "abab ab" into "abab" and " ab"; a+b (rank 2) merges, "abab" and " ab" are not ranks.
                Expect.sequenceEqual (t.Encode "abab ab") [ 2; 2; 3; 2 ] "ids"
                Expect.equal (t.Decode [ 2; 3; 1 ]) "ab b" "decode")
        }

        test "unsupported, missing and malformed tokenizers fail with one line naming the file" {
            let expectFails (files: (string * string) list) (fragment: string) =
                withFolder files (fun dir ->
                    try
                        TokenizerFiles.Load dir |> ignore
                        failtest $"expected a failure mentioning {fragment}"
                    with
                    | :? Expecto.AssertException -> reraise ()
                    | e ->
                        Expect.stringContains e.Message fragment "message"
                        Expect.isFalse (e.Message.Contains "\n") "one line")
            expectFails [ "tokenizer.json", """{"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": {"type": "BertPreTokenizer"}}""" ]
                "tokenizer.json: a WordPiece model with pre_tokenizer BertPreTokenizer is not supported"
            expectFails [ "tokenizer.json", "{not json" ] "tokenizer.json: not valid JSON"
            expectFails [ "tokenizer.json", bpeJson """{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel"}]}""" "null" ]
                "tokenizer.json: pre_tokenizer step Digits is not supported"
            expectFails [ "tokenizer.json", bpeJson """{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed"}, {"type": "ByteLevel"}]}""" "null" ]
                "tokenizer.json: a Split pre-tokenizer with behavior Removed is not supported"
            expectFails [ "tokenizer.json", bpeJson """{"type": "Metaspace"}""" "null" ] "tokenizer.json: a BPE model with pre_tokenizer Metaspace is not supported"
            expectFails [ "tokenizer.json", bpeJson """{"type": "ByteLevel"}, "normalizer": {"type": "Lowercase"}""" "null" ] "tokenizer.json: not valid JSON"
            expectFails [ "tokenizer.json", (bpeJson gpt2Pre "null").Replace("\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}") ]
                "tokenizer.json: normalizer Lowercase is not supported"
            expectFails [ "config.json", "{}" ] "no tokenizer.json or tokenizer.model"
            expectFails [ "tokenizer.model", "\u0001\u0002 this is no model" ] "tokenizer.model: neither a SentencePiece BPE model nor a tiktoken rank file"
            expectFails [ "tokenizer.json", bpeJson gpt2Pre "null"; "tokenizer_config.json", "[" ] "tokenizer_config.json: not valid JSON"
        }

        test "a tokenizer.json linking outside the model folder is refused" {
            let outside = tempDir ()
            try
                File.WriteAllText(Path.Combine(outside, "tokenizer.json"), ByteTokenizer.ToTokenizerJson())
                withFolder [] (fun dir ->
                    File.CreateSymbolicLink(Path.Combine(dir, "tokenizer.json"), Path.Combine(outside, "tokenizer.json")) |> ignore
                    let e = Expect.throwsT<MergeDsl.Core.Checkpoints.CheckpointFormatException> (fun () -> TokenizerFiles.Load dir |> ignore) "refused"
                    ())
            finally
                Directory.Delete(outside, true)
        }
    ]
