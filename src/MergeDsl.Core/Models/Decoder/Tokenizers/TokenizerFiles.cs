using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MergeDsl.Core.Checkpoints;
using Microsoft.ML.Tokenizers;
using JsonObject = System.Text.Json.Nodes.JsonObject;
using JsonNode = System.Text.Json.Nodes.JsonNode;
using JsonArray = System.Text.Json.Nodes.JsonArray;
using JsonValue = System.Text.Json.Nodes.JsonValue;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>
/// Finds and reads a model folder's tokenizer, every file through <see cref="ModelFiles"/>:
/// <list type="number">
/// <item><c>tokenizer.json</c> in this project's byte-level form → <see cref="ByteTokenizer"/>;</item>
/// <item><c>tokenizer.json</c> with a byte-level BPE model (GPT-2, Qwen2, Llama 3 style: ByteLevel pre-tokenizer,
/// optionally after one regex Split; normalizer none or NFC/NFKC) → Microsoft.ML.Tokenizers' <c>BpeTokenizer</c>;</item>
/// <item>otherwise <c>tokenizer.model</c>: a SentencePiece model (Llama 1/2, Mistral) → <c>LlamaTokenizer</c>,
/// or a tiktoken rank file (base64 token, space, rank per line) → <c>TiktokenTokenizer</c> with the cl100k pattern.</item>
/// </list>
/// Anything else fails with one line naming the file and what it holds.
/// </summary>
public static class TokenizerFiles
{
    /// <summary>HF's tokenizer file.</summary>
    public const string TokenizerJson = "tokenizer.json";
    /// <summary>SentencePiece or tiktoken model file.</summary>
    public const string TokenizerModel = "tokenizer.model";
    /// <summary>HF's tokenizer settings (special tokens, add_bos_token).</summary>
    public const string TokenizerConfigJson = "tokenizer_config.json";

    /// <summary>GPT-2's pre-tokenizer pattern (HF ByteLevel with <c>use_regex</c>).</summary>
    const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The cl100k pre-tokenizer pattern, which tiktoken rank files of Llama 3 and GPT-4 style models are used with.</summary>
    const string Cl100kPattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>One piece: the whole text.</summary>
    const string WholeText = @"(?s).+";

    /// <summary>Largest tokenizer file read (real ones are under 20 MB).</summary>
    const long MaxTokenizerBytes = 64L << 20;

    /// <summary>
    /// The tokenizer of <paramref name="folder"/>. <paramref name="config"/> supplies BOS/EOS ids where the
    /// tokenizer files do not say them.
    /// </summary>
    /// <exception cref="FileNotFoundException">No tokenizer.json nor tokenizer.model.</exception>
    /// <exception cref="FormatException">A tokenizer file this runtime cannot use (the message names it).</exception>
    public static ITextTokenizer Load(string folder, DecoderConfig? config = null)
    {
        ModelFiles.RefuseUnfinished(folder);
        string json = Path.Combine(folder, TokenizerJson);
        string model = Path.Combine(folder, TokenizerModel);
        var tokConfig = ReadTokenizerConfig(folder);
        if (Present(json))
        {
            var root = ParseObject(json, ModelFiles.ReadAll(json, MaxTokenizerBytes, folder));
            if (ByteTokenizer.Matches(root)) return new ByteTokenizer(json);
            string type = (root["model"] as JsonObject)?["type"]?.ToString() ?? "(none)";
            if (type == "BPE" && IsByteLevel(root)) return FromBpeJson(json, root, tokConfig, config);
            if (!Present(model))
                throw new FormatException($"{json}: a {type} model with pre_tokenizer {Describe(root["pre_tokenizer"])} is not supported (byte-level BPE is; a SentencePiece tokenizer.model beside it would be used instead)");
        }
        if (Present(model)) return FromModelFile(model, folder, tokConfig, config);
        throw new FileNotFoundException($"{folder}: no {TokenizerJson} or {TokenizerModel}", json);
    }

    static bool Present(string path) => UnixFiles.TryStat(path, followLinks: false) is not null;

    static JsonObject ParseObject(string file, byte[] bytes) => JsonFiles.ParseObject(Encoding.UTF8.GetString(bytes), file);

    static JsonObject? ReadTokenizerConfig(string folder)
    {
        string file = Path.Combine(folder, TokenizerConfigJson);
        return Present(file) ? ParseObject(file, ModelFiles.ReadAll(file, ModelFiles.MaxJsonBytes, folder)) : null;
    }

    static string Describe(JsonNode? n) => n is null ? "null" : (n as JsonObject)?["type"]?.ToString() ?? n.ToJsonString();

    static IEnumerable<JsonObject> Steps(JsonNode? pre) => pre switch
    {
        JsonObject { } o when o["type"]?.ToString() == "Sequence" && o["pretokenizers"] is JsonArray a => a.OfType<JsonObject>(),
        JsonObject o => [o],
        _ => [],
    };

    static bool IsByteLevel(JsonObject root) => Steps(root["pre_tokenizer"]).Any(s => s["type"]?.ToString() == "ByteLevel");

    /// <summary>Special tokens from added_tokens: content → id.</summary>
    static Dictionary<string, int> AddedTokens(string file, JsonObject root)
    {
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root["added_tokens"] is JsonArray added)
        {
            foreach (var t in added.OfType<JsonObject>())
            {
                string? content = t["content"]?.ToString();
                if (content is null || t["id"] is not JsonValue idv || !idv.TryGetValue<int>(out var id))
                    throw new FormatException($"{file}: an added_tokens entry lacks content or an integer id: {t.ToJsonString()}");
                specials[content] = id;
            }
        }
        return specials;
    }

    static ITextTokenizer FromBpeJson(string file, JsonObject root, JsonObject? tokConfig, DecoderConfig? config)
    {
        var model = (JsonObject)root["model"]!;
        if (model["byte_fallback"] is JsonValue bf && bf.TryGetValue<bool>(out var fallback) && fallback)
            throw new FormatException($"{file}: BPE with byte_fallback is not supported");
        if (model["vocab"] is not JsonObject vocabJson) throw new FormatException($"{file}: model.vocab must be an object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (k, v) in vocabJson)
        {
            if (v is not JsonValue jv || !jv.TryGetValue<int>(out var id)) throw new FormatException($"{file}: vocab entry '{k}' has no integer id");
            vocab[k] = id;
        }
        var merges = new List<string>();
        if (model["merges"] is JsonArray mergeList)
        {
            foreach (var m in mergeList)
            {
                merges.Add(m switch
                {
                    JsonValue s when s.TryGetValue<string>(out var text) => text,
                    JsonArray { Count: 2 } pair => $"{pair[0]} {pair[1]}",
                    _ => throw new FormatException($"{file}: a merges entry is neither \"a b\" nor [\"a\", \"b\"]: {m?.ToJsonString()}"),
                });
            }
        }
        var specials = AddedTokens(file, root);

        string? pattern = null;
        foreach (var step in Steps(root["pre_tokenizer"]))
        {
            string type = step["type"]?.ToString() ?? "";
            if (type == "Split" && pattern is null && (step["pattern"] as JsonObject)?["Regex"]?.ToString() is { } regex)
            {
                // Isolated: matches and the gaps between them are pieces; the GPT-style patterns match every
                // character, so the library's match-only splitting gives the same pieces. Other behaviours do not.
                string behavior = step["behavior"]?.ToString() ?? "Isolated";
                bool invert = step["invert"] is JsonValue iv && iv.TryGetValue<bool>(out var inv) && inv;
                if (behavior != "Isolated" || invert)
                    throw new FormatException($"{file}: a Split pre-tokenizer with behavior {behavior}{(invert ? ", inverted" : "")} is not supported (Isolated is)");
                pattern = regex;
            }
            else if (type == "ByteLevel")
            {
                bool useRegex = step["use_regex"] is not JsonValue ur || !ur.TryGetValue<bool>(out var u) || u;
                if (step["add_prefix_space"] is JsonValue aps && aps.TryGetValue<bool>(out var ap) && ap)
                    throw new FormatException($"{file}: ByteLevel with add_prefix_space is not supported");
                // Without its regex, ByteLevel keeps the text whole; the library's default would split at spaces and drop them.
                pattern ??= useRegex ? Gpt2Pattern : WholeText;
            }
            else
                throw new FormatException($"{file}: pre_tokenizer step {type} is not supported (ByteLevel and one regex Split before it are)");
        }
        NormalizationForm? form = Describe(root["normalizer"]) switch
        {
            "null" => null,
            "NFC" => NormalizationForm.FormC,
            "NFKC" => NormalizationForm.FormKC,
            var other => throw new FormatException($"{file}: normalizer {other} is not supported (none, NFC and NFKC are)"),
        };
        Tokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                SpecialTokens = specials,
                PreTokenizer = pattern is null ? null : new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), specials),
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"{file}: Microsoft.ML.Tokenizers refused the BPE model: {e.Message}");
        }
        int? bos = TemplateBos(root, specials) ?? (AddBos(tokConfig) ? SpecialId(tokConfig, "bos_token", specials) ?? config?.BosTokenId : null);
        int? eos = SpecialId(tokConfig, "eos_token", specials) ?? config?.EosTokenId;
        return new LibraryTokenizer(bpe, file, bos, eos, form);
    }

    /// <summary>The special token a TemplateProcessing post-processor puts first in a single sequence (Llama 3's BOS).</summary>
    static int? TemplateBos(JsonObject root, Dictionary<string, int> specials)
    {
        var post = root["post_processor"] as JsonObject;
        var steps = post?["type"]?.ToString() == "Sequence" && post["processors"] is JsonArray a ? a.OfType<JsonObject>() : post is null ? [] : [post];
        foreach (var p in steps)
        {
            if (p["type"]?.ToString() != "TemplateProcessing" || p["single"] is not JsonArray single || single.Count == 0) continue;
            if ((single[0] as JsonObject)?["SpecialToken"]?["id"]?.ToString() is { } first && specials.TryGetValue(first, out var id)) return id;
        }
        return null;
    }

    static bool AddBos(JsonObject? tokConfig)
        => tokConfig?["add_bos_token"] is JsonValue v && v.TryGetValue<bool>(out var b) && b;

    static int? SpecialId(JsonObject? tokConfig, string key, IReadOnlyDictionary<string, int> specials)
    {
        string? text = tokConfig?[key] switch
        {
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonObject o => o["content"]?.ToString(),
            _ => null,
        };
        return text is not null && specials.TryGetValue(text, out var id) ? id : null;
    }

    static ITextTokenizer FromModelFile(string file, string folder, JsonObject? tokConfig, DecoderConfig? config)
    {
        var bytes = ModelFiles.ReadAll(file, MaxTokenizerBytes, folder);
        if (LooksLikeTiktoken(bytes))
        {
            try
            {
                var tik = TiktokenTokenizer.Create(new MemoryStream(bytes), new RegexPreTokenizer(new Regex(Cl100kPattern, RegexOptions.Compiled), null), null);
                return new LibraryTokenizer(tik, file, config?.BosTokenId, config?.EosTokenId);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or InvalidDataException)
            {
                throw new FormatException($"{file}: not a usable tiktoken rank file ({e.Message})");
            }
        }
        try
        {
            bool addBos = tokConfig?["add_bos_token"] is not JsonValue v || !v.TryGetValue<bool>(out var b) || b;
            var sp = LlamaTokenizer.Create(new MemoryStream(bytes), addBeginOfSentence: false, addEndOfSentence: false);
            return new LibraryTokenizer(sp, file, addBos ? sp.BeginningOfSentenceId : null, sp.EndOfSentenceId);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new FormatException($"{file}: neither a SentencePiece BPE model nor a tiktoken rank file ({e.GetType().Name}: {e.Message})");
        }
    }

    /// <summary>tiktoken files are text lines "base64 rank"; SentencePiece models are binary protobuf.</summary>
    static bool LooksLikeTiktoken(byte[] bytes)
    {
        int end = Array.IndexOf(bytes, (byte)'\n');
        var line = Encoding.ASCII.GetString(bytes, 0, end < 0 ? Math.Min(bytes.Length, 256) : Math.Min(end, 256)).TrimEnd('\r');
        return Regex.IsMatch(line, @"^[A-Za-z0-9+/=]+ \d+$");
    }
}
