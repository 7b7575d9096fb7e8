using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>
/// The vocabulary of a model folder's <c>tokenizer.json</c>, as transformers' <c>get_vocab()</c> sees it: the model's
/// tokens (BPE, WordPiece and WordLevel maps, Unigram lists) and the added tokens, each with its id. Tokens whose id is
/// at least the config's <c>vocab_size</c> are left out (mergekit strips them: they have no embedding row).
/// </summary>
/// <param name="Folder">The model folder.</param>
/// <param name="Ids">Token → id.</param>
/// <param name="Added">The added-token entries of tokenizer.json (content, special, lstrip, …) that were kept, by id.</param>
/// <param name="Json">The parsed tokenizer.json.</param>
public sealed record TokenizerVocabulary(string Folder, IReadOnlyDictionary<string, int> Ids, IReadOnlyDictionary<int, JsonObject> Added, JsonObject Json)
{
    /// <summary>Reads <paramref name="folder"/>'s tokenizer.json (and the vocab_size of its config.json) through <see cref="ModelFiles"/>.</summary>
    /// <exception cref="FormatException">One line naming the file: no tokenizer.json, not JSON, or a model without a token list.</exception>
    public static TokenizerVocabulary Load(string folder)
    {
        string path = Path.Combine(folder, TokenizerFiles.TokenizerJson);
        if (!File.Exists(path)) throw new FormatException($"{path}: no tokenizer.json (a tokenizer merge needs one in every model)");
        var json = JsonFiles.ParseObject(ModelFiles.ReadText(path, folder), path);
        int? limit = null;
        string configPath = Path.Combine(folder, ConfigRewrite.FileName);
        if (File.Exists(configPath)
            && JsonFiles.ParseObject(ModelFiles.ReadText(configPath, folder), configPath)["vocab_size"] is JsonValue v
            && v.TryGetValue(out int n))
            limit = n;
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        void Put(string token, int id)
        {
            if (id < 0) throw new FormatException($"{path}: token id {id} is negative");
            if (limit is { } l && id >= l) return;
            ids[token] = id;
        }
        var model = json["model"] as JsonObject ?? throw new FormatException($"{path}: no \"model\" object");
        switch (model["vocab"])
        {
            case JsonObject map:
                foreach (var (token, id) in map) Put(token, Int(id, path));
                break;
            case JsonArray list:
                // Unigram: [[piece, score], …], the id is the position.
                for (int i = 0; i < list.Count; i++)
                    Put((list[i] as JsonArray)?[0]?.GetValue<string>() ?? throw new FormatException($"{path}: vocab entry {i} is not [piece, score]"), i);
                break;
            default:
                throw new FormatException($"{path}: model type '{model["type"]}' has no vocabulary list");
        }
        var added = new SortedDictionary<int, JsonObject>();
        if (json["added_tokens"] is JsonArray entries)
            foreach (var e in entries.OfType<JsonObject>())
            {
                int id = Int(e["id"], path);
                string content = e["content"]?.GetValue<string>() ?? throw new FormatException($"{path}: an added token has no content");
                if (limit is { } l && id >= l) continue;
                Put(content, id);
                added[id] = e;
            }
        return new TokenizerVocabulary(folder, ids, added, json);
    }

    static int Int(JsonNode? node, string path) =>
        node is JsonValue v && v.TryGetValue(out int i) ? i : throw new FormatException($"{path}: token id {node?.ToJsonString()} is not an integer");

    /// <summary>Tokens in id order (ties, which a well-formed file does not have, by text).</summary>
    public IEnumerable<KeyValuePair<string, int>> InIdOrder =>
        Ids.OrderBy(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal);
}
