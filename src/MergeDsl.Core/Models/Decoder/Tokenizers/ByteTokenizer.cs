using System.Text;
using System.Text.Json;
using System.Text.Encodings.Web;
using System.Text.Json.Nodes;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>
/// One token per UTF-8 byte: ids 0–255 are the byte values, 256 is BOS <c>&lt;s&gt;</c>, 257 is EOS <c>&lt;/s&gt;</c>
/// (vocab_size 258). It reads and writes a <c>tokenizer.json</c> that Hugging Face <c>tokenizers</c> loads as the
/// same tokenizer: model BPE over GPT-2's byte-level alphabet with an empty merges list (so every byte stays
/// a token), ByteLevel pre-tokenizer and decoder without regex splitting or prefix space, and the two special
/// tokens as added tokens. The exact JSON is in docs/llm.md.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    /// <summary>The BOS id.</summary>
    public const int Bos = 256;
    /// <summary>The EOS id.</summary>
    public const int Eos = 257;
    /// <summary>Ids in all (256 bytes + BOS + EOS).</summary>
    public const int VocabSize = 258;
    /// <summary>BOS text.</summary>
    public const string BosText = "<s>";
    /// <summary>EOS text.</summary>
    public const string EosText = "</s>";

    /// <summary>Creates the tokenizer; <paramref name="source"/> names where it came from.</summary>
    public ByteTokenizer(string source = "byte tokenizer") { Source = source; }

    /// <inheritdoc/>
    public string Source { get; }
    /// <inheritdoc/>
    public int? BosId => Bos;
    /// <inheritdoc/>
    public int? EosId => Eos;

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text) => Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
        => Encoding.UTF8.GetString(ids.Where(i => i is >= 0 and < 256).Select(i => (byte)i).ToArray());

    // Readable output: "<s>" rather than "\u003Cs\u003E", the byte-level characters as themselves.
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static JsonObject ByteLevel() => new()
    {
        ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false,
    };

    static JsonObject Added(int id, string content) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
        ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
    };

    /// <summary>The tokenizer.json text (HF <c>tokenizers</c> format).</summary>
    public static string ToTokenizerJson()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.Chars[b].ToString()] = b;
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(Bos, BosText), Added(Eos, EosText)),
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(),
            ["post_processor"] = null,
            ["decoder"] = ByteLevel(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = new JsonArray(),
            },
        };
        return root.ToJsonString(Indented);
    }

    /// <summary>A tokenizer_config.json naming the special tokens, so <c>AutoTokenizer</c> loads the folder.</summary>
    public static string ToTokenizerConfigJson() => new JsonObject
    {
        ["tokenizer_class"] = "PreTrainedTokenizerFast",
        ["bos_token"] = BosText,
        ["eos_token"] = EosText,
        ["add_bos_token"] = true,
        ["model_max_length"] = 1_000_000,
    }.ToJsonString(Indented);

    /// <summary>
    /// True when <paramref name="root"/> is exactly this tokenizer's form: BPE, no merges, the 256 byte-level
    /// characters at their byte ids, <c>&lt;s&gt;</c> at 256 and <c>&lt;/s&gt;</c> at 257.
    /// </summary>
    public static bool Matches(JsonObject root)
    {
        if (root["model"] is not JsonObject model || model["type"]?.ToString() != "BPE") return false;
        if (model["merges"] is not JsonArray merges || merges.Count != 0) return false;
        if (model["vocab"] is not JsonObject vocab || vocab.Count != 256) return false;
        for (int b = 0; b < 256; b++)
        {
            if (vocab[ByteLevelAlphabet.Chars[b].ToString()] is not JsonValue v || !v.TryGetValue<int>(out var id) || id != b) return false;
        }
        if (root["pre_tokenizer"] is not JsonObject pre || pre["type"]?.ToString() != "ByteLevel") return false;
        if (pre["add_prefix_space"] is JsonValue aps && aps.TryGetValue<bool>(out var a) && a) return false;
        if (root["added_tokens"] is not JsonArray added) return false;
        var specials = added.OfType<JsonObject>().ToDictionary(t => t["content"]?.ToString() ?? "", t => t["id"]?.GetValue<int>() ?? -1);
        return specials.Count == 2 && specials.GetValueOrDefault(BosText, -1) == Bos && specials.GetValueOrDefault(EosText, -1) == Eos;
    }
}
