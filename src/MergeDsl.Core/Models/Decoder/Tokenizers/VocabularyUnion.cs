using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>Which tokenizer the output of a merge gets (mergekit's <c>tokenizer_source</c>).</summary>
public enum TokenizerSourceKind
{
    /// <summary>The base model's (the first model's when there is no base).</summary>
    Base,
    /// <summary>The union of every model's vocabulary: the base's, then tokens the others add.</summary>
    Union,
    /// <summary>One named model's.</summary>
    Model,
}

/// <summary>
/// The output vocabulary of a merge and, for every input model, where each output token's embedding row comes
/// from: mergekit's <c>build_tokenizer</c> and <c>PermutedEmbeddings</c> (mergekit/tokenizer/). Embedding and
/// lm_head rows are realigned to the output vocabulary before merging, so merges combine rows of the same token.
/// </summary>
public sealed class VocabularyUnion
{
    readonly IReadOnlyList<TokenizerVocabulary> _models;
    readonly int? _base;
    readonly JsonObject _tokenizerJson;
    readonly List<JsonObject> _newAdded;
    readonly IReadOnlyDictionary<int, (int Model, int Row, bool Force)> _configured;

    /// <summary>Output tokens by id.</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>Per input model (in the order given): for each output id, the model's row, or −1 when it lacks the token.</summary>
    public IReadOnlyList<int[]> Rows { get; }

    /// <summary>Rows of the output embedding: the vocabulary size rounded up to the padding multiple.</summary>
    public int Size { get; }

    /// <summary>True when the output vocabulary has tokens the source folder's tokenizer lacks (a union's, or configured tokens).</summary>
    public bool AddsTokens => _newAdded.Count > 0;

    /// <summary>The folder whose tokenizer files the output's are built from.</summary>
    public string TokenizerFolder { get; }

    VocabularyUnion(IReadOnlyList<TokenizerVocabulary> models, int? baseIndex, IReadOnlyList<string> tokens, TokenizerVocabulary source,
        List<JsonObject> newAdded, int size, IReadOnlyList<TokenEmbeddingSetting> settings)
    {
        _models = models;
        _base = baseIndex;
        Tokens = tokens;
        TokenizerFolder = source.Folder;
        _tokenizerJson = (JsonObject)source.Json.DeepClone();
        _newAdded = newAdded;
        Size = size;
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++) index[tokens[i]] = i;
        Rows = models.Select(m =>
        {
            var rows = new int[tokens.Count];
            for (int i = 0; i < tokens.Count; i++) rows[i] = m.Ids.TryGetValue(tokens[i], out int r) ? r : -1;
            return rows;
        }).ToList();
        _configured = Resolve(settings, index);
    }

    /// <summary>Each setting as (model, row, force) by output id; model −1 is a zero row. One-line errors name the token.</summary>
    Dictionary<int, (int Model, int Row, bool Force)> Resolve(IReadOnlyList<TokenEmbeddingSetting> settings, Dictionary<string, int> index)
    {
        var result = new Dictionary<int, (int, int, bool)>();
        foreach (var s in settings)
        {
            string what = $"tokenizer.tokens '{s.Token}'";
            if (s.Kind != TokenEmbeddingKind.Zero && (s.Model < 0 || s.Model >= _models.Count))
                throw new FormatException($"{what}: the source model is not one of the merged models");
            int id = index[s.Token];
            int row = -1;
            switch (s.Kind)
            {
                case TokenEmbeddingKind.Model:
                    if (!_models[s.Model].Ids.TryGetValue(s.Token, out row))
                        throw new FormatException($"{what}: source model '{_models[s.Model].Folder}' has no such token (mergekit fails here too)");
                    break;
                case TokenEmbeddingKind.ModelToken when (s.SourceToken is null) == (s.SourceTokenId is null):
                    throw new FormatException($"{what}: a model_token source takes exactly one of token and token_id");
                case TokenEmbeddingKind.ModelToken when s.SourceToken is { } other:
                    if (!_models[s.Model].Ids.TryGetValue(other, out row))
                        throw new FormatException($"{what}: source model '{_models[s.Model].Folder}' has no token '{other}'");
                    break;
                case TokenEmbeddingKind.ModelToken:
                    row = s.SourceTokenId!.Value;
                    if (row < 0) throw new FormatException($"{what}: token_id {row} is negative");
                    break;
            }
            if (!result.TryAdd(id, (s.Kind == TokenEmbeddingKind.Zero ? -1 : s.Model, row, s.Force)))
                throw new FormatException($"{what}: configured twice");
        }
        return result;
    }

    /// <summary>
    /// Builds the output vocabulary. <paramref name="baseIndex"/>: the base model among <paramref name="models"/>
    /// (null without one: the first model's tokenizer is then the starting point, and no row is preferred for
    /// being the base's). <paramref name="sourceIndex"/>: the model of <see cref="TokenizerSourceKind.Model"/>.
    /// Union: the base's tokens with their ids, then every model's (base first, then in order) ordinary tokens
    /// the base lacks, in id order, then their added tokens not yet present (mergekit iterates Python sets and
    /// dicts here, so its order is not defined; this one is).
    /// </summary>
    /// <remarks><paramref name="tokens"/>: mergekit's per-token settings; their tokens that the vocabulary lacks are
    /// appended as non-special added tokens, in the order given (mergekit's <c>add_tokens</c>).</remarks>
    public static VocabularyUnion Build(IReadOnlyList<TokenizerVocabulary> models, int? baseIndex, TokenizerSourceKind kind,
        int sourceIndex = 0, int? padToMultipleOf = null, IReadOnlyList<TokenEmbeddingSetting>? tokens = null)
    {
        if (models.Count == 0) throw new ArgumentException("no models");
        if (padToMultipleOf is < 1) throw new ArgumentException($"pad_to_multiple_of {padToMultipleOf} is not positive");
        int start = baseIndex ?? 0;
        var source = kind == TokenizerSourceKind.Model ? models[sourceIndex] : models[start];
        var vocabulary = new List<string>();
        void Place(string token, int id)
        {
            while (vocabulary.Count <= id) vocabulary.Add("");
            vocabulary[id] = token;
        }
        foreach (var (token, id) in source.InIdOrder) Place(token, id);
        if (vocabulary.Contains(""))
            throw new FormatException($"{Path.Combine(source.Folder, TokenizerFiles.TokenizerJson)}: token ids are not contiguous (id {vocabulary.IndexOf("")} is missing)");
        var newAdded = new List<JsonObject>();
        if (kind == TokenizerSourceKind.Union)
        {
            var present = new HashSet<string>(vocabulary, StringComparer.Ordinal);
            var order = new[] { start }.Concat(Enumerable.Range(0, models.Count).Where(i => i != start)).ToList();
            var addedContent = new HashSet<string>(order.SelectMany(i => models[i].Added.Values.Select(e => e["content"]!.GetValue<string>())), StringComparer.Ordinal);
            foreach (int m in order)
                foreach (var (token, _) in models[m].InIdOrder)
                    if (!addedContent.Contains(token) && present.Add(token))
                    {
                        newAdded.Add(PlainAdded(vocabulary.Count, token));
                        vocabulary.Add(token);
                    }
            foreach (int m in order)
                foreach (var (_, entry) in models[m].Added)
                {
                    string token = entry["content"]!.GetValue<string>();
                    if (!present.Add(token)) continue;
                    var copy = (JsonObject)entry.DeepClone();
                    copy["id"] = vocabulary.Count;
                    newAdded.Add(copy);
                    vocabulary.Add(token);
                }
        }
        var settings = tokens ?? [];
        var known = new HashSet<string>(vocabulary, StringComparer.Ordinal);
        foreach (var setting in settings)
            if (known.Add(setting.Token))
            {
                newAdded.Add(PlainAdded(vocabulary.Count, setting.Token));
                vocabulary.Add(setting.Token);
            }
        int size = vocabulary.Count;
        if (padToMultipleOf is { } p && size % p != 0) size = (size / p + 1) * p;
        return new VocabularyUnion(models, baseIndex, vocabulary, source, newAdded, size, settings);
    }

    /// <summary>An added-token entry as transformers' <c>add_tokens</c> writes a plain (non-special) token.</summary>
    static JsonObject PlainAdded(int id, string token) => new()
    {
        ["id"] = id, ["content"] = token, ["single_word"] = false, ["lstrip"] = false,
        ["rstrip"] = false, ["normalized"] = true, ["special"] = false,
    };

    /// <summary>
    /// Model <paramref name="model"/>'s matrix realigned to the output vocabulary, given every model's matrix of the same
    /// parameter (rows = that model's token ids; null where a model lacks the parameter). A token the model has keeps
    /// its row; one it lacks gets, as mergekit: the row of the only model that has it, zeros when none has it, the
    /// base's row when the base has it, else the mean of the rows of the models that have it. A token with a
    /// <see cref="TokenEmbeddingSetting"/> takes the configured row instead (only where the model lacks it, unless forced).
    /// Padding rows are the mean of the vocabulary's rows. Computed in float32, returned in the model's dtype.
    /// </summary>
    public Tensor Align(int model, IReadOnlyList<Tensor?> matrices)
    {
        using var scope = NewDisposeScope();
        var own = matrices[model] ?? throw new ArgumentException($"model {model} has no matrix to align");
        long width = own.shape[1];
        var result = zeros([Size, width], ScalarType.Float32);
        var mine = Rows[model];
        var take = new List<long>();
        var to = new List<long>();
        for (int i = 0; i < mine.Length; i++)
        {
            if (mine[i] < 0) continue;
            if (mine[i] >= own.shape[0]) throw new FormatException($"{_models[model].Folder}: token '{Tokens[i]}' has id {mine[i]}, beyond the {own.shape[0]} embedding rows");
            take.Add(mine[i]);
            to.Add(i);
        }
        if (take.Count > 0)
            result.index_copy_(0, tensor(to.ToArray()), own.to_type(ScalarType.Float32).index_select(0, tensor(take.ToArray())));
        for (int i = 0; i < mine.Length; i++)
        {
            if (_configured.TryGetValue(i, out var set))
            {
                if (mine[i] >= 0 && !set.Force) continue;
                if (set.Model < 0) result.select(0, i).zero_();
                else
                {
                    var from = matrices[set.Model]
                        ?? throw new FormatException($"tokenizer.tokens '{Tokens[i]}': source model '{_models[set.Model].Folder}' has no matrix of this parameter");
                    if (set.Row >= from.shape[0])
                        throw new FormatException($"tokenizer.tokens '{Tokens[i]}': row {set.Row} is beyond the {from.shape[0]} rows of '{_models[set.Model].Folder}'");
                    result.select(0, i).copy_(from.select(0, set.Row).to_type(ScalarType.Float32));
                }
                continue;
            }
            if (mine[i] >= 0) continue;
            var holders = Enumerable.Range(0, _models.Count).Where(m => Rows[m][i] >= 0 && matrices[m] is not null).ToList();
            if (holders.Count == 0) continue;
            Tensor Row(int m) => matrices[m]!.select(0, Rows[m][i]).to_type(ScalarType.Float32);
            var row = holders.Count == 1 ? Row(holders[0])
                : _base is { } b && holders.Contains(b) ? Row(b)
                : stack(holders.Select(Row).ToArray()).mean([0L]);
            result.select(0, i).copy_(row);
        }
        if (Size > Tokens.Count)
            result.narrow(0, Tokens.Count, Size - Tokens.Count).copy_(result.narrow(0, 0, Tokens.Count).mean([0L], keepdim: true).expand(Size - Tokens.Count, width));
        return result.to_type(own.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The output's tokenizer.json and tokenizer_config.json: the source folder's with the new tokens appended to
    /// <c>added_tokens</c> and <c>added_tokens_decoder</c>, and <paramref name="chatTemplate"/> set when given.
    /// <paramref name="tokenizerConfig"/>: the source folder's tokenizer_config.json text, if it has one.
    /// </summary>
    public IReadOnlyDictionary<string, string> OutputFiles(string? tokenizerConfig, string? chatTemplate)
    {
        var files = new Dictionary<string, string>();
        if (_newAdded.Count > 0)
        {
            var json = (JsonObject)_tokenizerJson.DeepClone();
            if (json["added_tokens"] is not JsonArray list) json["added_tokens"] = list = [];
            foreach (var e in _newAdded) list.Add(e.DeepClone());
            files[TokenizerFiles.TokenizerJson] = Write(json);
        }
        if (_newAdded.Count > 0 || chatTemplate is not null)
        {
            var cfg = tokenizerConfig is null ? new JsonObject() : JsonFiles.ParseObject(tokenizerConfig, TokenizerFiles.TokenizerConfigJson);
            if (_newAdded.Count > 0)
            {
                if (cfg["added_tokens_decoder"] is not JsonObject decoder) cfg["added_tokens_decoder"] = decoder = [];
                foreach (var e in _newAdded)
                {
                    var entry = (JsonObject)e.DeepClone();
                    string id = entry["id"]!.ToJsonString();
                    entry.Remove("id");
                    decoder[id] = entry;
                }
            }
            if (chatTemplate is not null) cfg["chat_template"] = chatTemplate;
            files[TokenizerFiles.TokenizerConfigJson] = Write(cfg);
        }
        return files;
    }

    /// <summary>Parses a small JSON object (a tokenizer or config file); one-line <see cref="FormatException"/> naming <paramref name="label"/>.</summary>
    public static JsonObject ParseObject(string json, string label) => JsonFiles.ParseObject(json, label);

    /// <summary>Indented JSON, non-ASCII kept as is (as transformers writes it).</summary>
    public static string Write(JsonNode node) =>
        node.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
}
