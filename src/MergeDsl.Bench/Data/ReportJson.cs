using System.Text.Json;
using System.Text.Json.Nodes;

namespace MergeDsl.Bench.Data;

/// <summary>
/// A benchmark's results.json opened to be read back (to combine runs of different seeds): every problem is an
/// <see cref="InvalidDataException"/> whose one-line message names the file and the field at fault.
/// </summary>
public sealed class ReportJson
{
    readonly string path;

    /// <summary>The report's top-level object.</summary>
    public JsonNode Root { get; }

    ReportJson(string path, JsonNode root) => (this.path, Root) = (path, root);

    /// <summary>
    /// Parses <paramref name="path"/> and checks that its "benchmark" field is <paramref name="benchmark"/>;
    /// <paramref name="kind"/> names such a report in the refusal ("a task-pool report").
    /// </summary>
    public static ReportJson Open(string path, string benchmark, string kind)
    {
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty JSON"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not JSON ({e.Message})"); }
        if ((string?)root["benchmark"] != benchmark)
            throw new InvalidDataException($"{path}: not {kind} (benchmark '{(string?)root["benchmark"]}')");
        return new ReportJson(path, root);
    }

    /// <summary>The field <paramref name="name"/> of <paramref name="node"/>; <paramref name="where"/> names the node in the refusal.</summary>
    public JsonNode Field(JsonNode? node, string name, string where) =>
        node?[name] ?? throw new InvalidDataException($"{path}: missing '{name}' in {where}");

    /// <summary>A refusal naming the file, for problems the caller finds.</summary>
    public InvalidDataException Invalid(string problem) => new($"{path}: {problem}");
}
