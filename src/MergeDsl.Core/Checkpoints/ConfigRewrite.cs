using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Makes a copied Hugging Face <c>config.json</c> describe the weights actually written: the layer count of a
/// restacked model, the vocabulary size of resized embeddings, and the dtype of the tensors. Only keys the file
/// already has are changed (top level only: nested vision/text configs are left alone), so a config that needs
/// no change is copied byte for byte.
/// </summary>
public static class ConfigRewrite
{
    /// <summary>The file this rewrites.</summary>
    public const string FileName = "config.json";

    /// <summary>
    /// The rewritten text, or null when nothing changes. <paramref name="layers"/>: the output's layer count when
    /// the merge changed it (<c>num_hidden_layers</c>). <c>vocab_size</c> follows the rows of the
    /// <c>*embed_tokens.weight</c> tensor; <c>torch_dtype</c> (and the newer <c>dtype</c>) the one dtype every
    /// floating-point tensor is written in.
    /// </summary>
    /// <exception cref="FormatException">The text is not a JSON object (one line naming <paramref name="label"/>).</exception>
    public static string? Rewrite(string json, string label, IReadOnlyList<(string Name, DType DType, long[] Shape)> layout, int? layers)
    {
        var root = JsonFiles.ParseObject(json, label);
        bool changed = false;
        void Set(string key, JsonNode value)
        {
            if (!root.TryGetPropertyValue(key, out var old)) return;
            if (old is not null && JsonNode.DeepEquals(old, value)) return;
            root[key] = value;
            changed = true;
        }
        if (layers is { } n) Set("num_hidden_layers", JsonValue.Create(n));
        var embedding = layout.FirstOrDefault(t => t.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) && t.Shape.Length == 2);
        if (embedding.Name is not null) Set("vocab_size", JsonValue.Create(embedding.Shape[0]));
        var floats = layout.Select(t => t.DType).Where(d => d is DType.F64 or DType.F32 or DType.F16 or DType.BF16).Distinct().ToList();
        if (floats.Count == 1 && TorchName(floats[0]) is { } name)
        {
            Set("torch_dtype", JsonValue.Create(name));
            Set("dtype", JsonValue.Create(name));
        }
        if (!changed) return null;
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
    }

    /// <summary>transformers' name of a dtype (<c>torch_dtype</c>), or null for a dtype it has no name for here.</summary>
    public static string? TorchName(DType d) => d switch
    {
        DType.F64 => "float64",
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => null,
    };
}
