using System.Text.Json;
using System.Text.Json.Nodes;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>Parses the small JSON files of a decoder folder (config, tokenizer) into objects, all errors as one line.</summary>
internal static class JsonFiles
{
    /// <summary>
    /// Parses <paramref name="json"/> as an object and walks every node once: System.Text.Json builds objects
    /// lazily, so a duplicate key would otherwise surface later as an unrelated ArgumentException.
    /// </summary>
    /// <exception cref="FormatException">"&lt;label&gt;: not valid JSON (…)" or "expected a JSON object".</exception>
    public static JsonObject ParseObject(string json, string label)
    {
        try
        {
            var root = JsonNode.Parse(json) as JsonObject ?? throw new FormatException($"{label}: expected a JSON object");
            Walk(root);
            return root;
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            throw new FormatException($"{label}: not valid JSON ({e.Message})");
        }
    }

    static void Walk(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, v) in o) Walk(v);
                break;
            case JsonArray a:
                foreach (var v in a) Walk(v);
                break;
        }
    }
}
