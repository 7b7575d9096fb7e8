using System.Text.Json;

namespace MergeDsl.Core.Partitioning;

/// <summary>A tensor of a shard: name and data bytes (what the index needs).</summary>
/// <param name="Name">The tensor's name in the output.</param>
/// <param name="Bytes">Length of its data in the shard, in bytes.</param>
public sealed record ManifestTensor(string Name, long Bytes);

/// <summary>A shard a part wrote: index in the layout, file, length, SHA-256 and its tensors.</summary>
/// <param name="Index">The shard's 0-based position in the single-run layout.</param>
/// <param name="File">The shard's file name (as a single run names it).</param>
/// <param name="Bytes">The file's length in bytes.</param>
/// <param name="Sha256">SHA-256 of the file, hex; finalize checks it.</param>
/// <param name="Tensors">The tensors it holds, in file order.</param>
public sealed record ManifestShard(int Index, string File, long Bytes, string Sha256, IReadOnlyList<ManifestTensor> Tensors);

/// <summary>
/// <see cref="FileName"/> in a finished part's folder: everything finalize needs to check the part and join it into
/// the output without the inputs or the plan: which part of how many, the run's identity (recipe, inputs, options,
/// layout), the recipe's canonical text and the inputs' header hashes (for people), the shards with their hashes and
/// tensors, the total shard count, the copy-through source and the model card's text.
/// </summary>
/// <param name="Identity">The run identity's hash; every part of one merge has the same.</param>
/// <param name="Part">This part's 0-based index.</param>
/// <param name="Parts">How many parts the merge was split into.</param>
/// <param name="ShardCount">Shards of the whole output (all parts together).</param>
/// <param name="Recipe">The recipe's canonical text.</param>
/// <param name="Inputs">Each input's label and header hash.</param>
/// <param name="Shards">The shards this part wrote.</param>
/// <param name="BytesRead">Input bytes this part read.</param>
/// <param name="BytesWritten">Shard bytes this part wrote.</param>
/// <param name="Seconds">Wall time of the part, in seconds.</param>
/// <param name="CopyFilesFrom">The model folder whose config and tokenizer files finalize copies through, if any.</param>
/// <param name="ExtraFiles">Further files finalize writes into the output, by file name (e.g. the model card).</param>
public sealed record PartManifest(
    string Identity, int Part, int Parts, int ShardCount, string Recipe, IReadOnlyList<InputHash> Inputs,
    IReadOnlyList<ManifestShard> Shards, long BytesRead, long BytesWritten, double Seconds,
    string? CopyFilesFrom, IReadOnlyDictionary<string, string> ExtraFiles)
{
    /// <summary>The manifest's file name inside a part folder.</summary>
    public const string FileName = "part.json";

    const string Format = "mergedsl-part-1";

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    /// <summary>The manifest's JSON text.</summary>
    public string ToJson() => JsonSerializer.Serialize(new
    {
        format = Format, Identity, Part, Parts, ShardCount, Recipe, Inputs, Shards, BytesRead, BytesWritten, Seconds, CopyFilesFrom, ExtraFiles,
    }, Json);

    /// <summary>Reads a part's manifest; a <see cref="PartitionException"/> naming <paramref name="label"/> when it is not one.</summary>
    public static PartManifest Read(string path, string label)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var o = doc.RootElement;
            if (o.GetProperty("format").GetString() != Format) throw new PartitionException($"{label}: {FileName} is not a mergedsl part manifest");
            return new PartManifest(
                o.GetProperty("identity").GetString()!, o.GetProperty("part").GetInt32(), o.GetProperty("parts").GetInt32(),
                o.GetProperty("shardCount").GetInt32(), o.GetProperty("recipe").GetString()!,
                o.GetProperty("inputs").EnumerateArray().Select(i => new InputHash(i.GetProperty("label").GetString()!, i.GetProperty("sha256").GetString()!)).ToList(),
                o.GetProperty("shards").EnumerateArray().Select(s => new ManifestShard(
                    s.GetProperty("index").GetInt32(), s.GetProperty("file").GetString()!, s.GetProperty("bytes").GetInt64(), s.GetProperty("sha256").GetString()!,
                    s.GetProperty("tensors").EnumerateArray().Select(t => new ManifestTensor(t.GetProperty("name").GetString()!, t.GetProperty("bytes").GetInt64())).ToList())).ToList(),
                o.GetProperty("bytesRead").GetInt64(), o.GetProperty("bytesWritten").GetInt64(), o.GetProperty("seconds").GetDouble(),
                o.GetProperty("copyFilesFrom").ValueKind == JsonValueKind.Null ? null : o.GetProperty("copyFilesFrom").GetString(),
                o.GetProperty("extraFiles").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal));
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IOException or UnauthorizedAccessException)
        {
            throw new PartitionException($"{label}: unreadable {FileName} ({e.Message.Split('\n')[0]}); run the part again");
        }
    }
}
