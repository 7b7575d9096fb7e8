using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace MergeDsl.Bench.Data;

/// <summary>Bytes per split of every domain (whole documents in hash order; the last one is cut at the cap).</summary>
public sealed record TextSplitSizes
{
    /// <summary>Training text per domain (experts' fine-tuning; the held-in domains' mix for pretraining).</summary>
    public int TrainBytes { get; init; } = 262_144;
    /// <summary>Validation text per domain: every hyper-parameter is chosen on it.</summary>
    public int ValidationBytes { get; init; } = 8_192;
    /// <summary>Test text per domain: only reported, never used for a choice.</summary>
    public int TestBytes { get; init; } = 16_384;
}

/// <summary>Where one domain's splits came from.</summary>
/// <param name="Domain">Domain name.</param>
/// <param name="Packages">Debian packages and the versions installed.</param>
/// <param name="Documents">Documents found.</param>
/// <param name="DocumentsPerSplit">Documents (whole or cut) in train, validation, test.</param>
/// <param name="BytesPerSplit">UTF-8 bytes in train, validation, test.</param>
/// <param name="Sha256">Hash of the three splits' bytes (enters the zoo's cache key).</param>
public sealed record TextSplitInfo(string Domain, IReadOnlyDictionary<string, string> Packages, int Documents,
    IReadOnlyList<int> DocumentsPerSplit, IReadOnlyList<int> BytesPerSplit, string Sha256);

/// <summary>A domain's train, validation and test text as UTF-8 bytes.</summary>
public sealed record TextSplits(TextDomain Domain, byte[] Train, byte[] Validation, byte[] Test, TextSplitInfo Info);

/// <summary>
/// The text task pool's corpus: each domain's documents, split deterministically by document (a document's
/// SHA-256 of "domain:key" places it in test (first 10% of the hash range), validation (next 10%) or train (the
/// rest), so no document is in two splits and adding one moves no other), capped at <see cref="TextSplitSizes"/>
/// and cached under <c>&lt;root&gt;/text/</c> keyed by the sizes and the installed package versions.
/// </summary>
public sealed class TextCorpus(string root)
{
    /// <summary>The command that installs every domain's packages.</summary>
    public const string InstallCommand = "bash scripts/install-data.sh  (or: mergedsl data text)";

    /// <summary>Separator between documents inside a split.</summary>
    public const string Separator = "\n\n";

    /// <summary>The data folder.</summary>
    public string Root { get; } = Path.GetFullPath(root);

    /// <summary>Fraction of documents (by hash) in the test split, and in the validation split.</summary>
    public const double TestFraction = 0.1, ValidationFraction = 0.1;

    /// <summary>Installed versions of <paramref name="packages"/> from dpkg's status file ("" when absent).</summary>
    public static IReadOnlyDictionary<string, string> PackageVersions(IEnumerable<string> packages)
    {
        var wanted = packages.ToHashSet();
        var found = wanted.ToDictionary(p => p, _ => "");
        const string status = "/var/lib/dpkg/status";
        if (!File.Exists(status)) return found;
        string? current = null;
        foreach (var line in File.ReadLines(status))
        {
            if (line.StartsWith("Package: ", StringComparison.Ordinal)) current = line[9..].Trim();
            else if (line.StartsWith("Version: ", StringComparison.Ordinal) && current is not null && wanted.Contains(current))
                found[current] = line[9..].Trim();
        }
        return found;
    }

    /// <summary>Position of a document in [0, 1) from SHA-256 of "domain:key".</summary>
    public static double HashPosition(string domain, string key)
    {
        var h = SHA256.HashData(Encoding.UTF8.GetBytes(domain + ":" + key));
        return BitConverter.ToUInt64(h, 0) / 18446744073709551616.0;
    }

    static string Hex(byte[] bytes, int chars) => Convert.ToHexString(bytes)[..chars].ToLowerInvariant();

    /// <summary>The domain's splits, from the cache or built (and cached) from the installed packages.</summary>
    /// <exception cref="DataNotInstalledException">A package is missing.</exception>
    public TextSplits Load(TextDomain domain, TextSplitSizes sizes, Action<string>? log = null)
    {
        var missing = TextDocuments.MissingPackages(domain);
        if (missing.Count > 0)
            throw new DataNotInstalledException(
                $"text domain '{domain.Name}' needs Debian package(s) {string.Join(", ", missing)}; install them with: {InstallCommand}");
        var versions = PackageVersions(domain.InstallPackages);
        var key = Hex(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { domain, sizes, versions, TestFraction, ValidationFraction }))), 12);
        var folder = Path.Combine(Root, "text", $"{domain.Name}-{key}");
        var manifest = Path.Combine(folder, "splits.json");
        string[] names = ["train", "validation", "test"];
        if (File.Exists(manifest))
        {
            var info = JsonSerializer.Deserialize<TextSplitInfo>(File.ReadAllText(manifest))!;
            var b = names.Select(n => File.ReadAllBytes(Path.Combine(folder, n + ".txt"))).ToArray();
            return new TextSplits(domain, b[0], b[1], b[2], info);
        }
        var built = Build(domain, sizes, versions);
        // Write beside, then move into place: a reader never sees a half-written cache entry.
        var tmp = folder + ".tmp-" + Environment.ProcessId;
        Directory.CreateDirectory(tmp);
        File.WriteAllBytes(Path.Combine(tmp, "train.txt"), built.Train);
        File.WriteAllBytes(Path.Combine(tmp, "validation.txt"), built.Validation);
        File.WriteAllBytes(Path.Combine(tmp, "test.txt"), built.Test);
        File.WriteAllText(Path.Combine(tmp, "splits.json"), JsonSerializer.Serialize(built.Info, new JsonSerializerOptions { WriteIndented = true }));
        try { Directory.Move(tmp, folder); }
        catch (IOException) when (File.Exists(manifest)) { Directory.Delete(tmp, true); }   // a concurrent run cached it first
        log?.Invoke($"text {domain.Name}: {built.Info.Documents} documents; train/validation/test {string.Join("/", built.Info.BytesPerSplit)} bytes -> {folder}");
        return built;
    }

    static TextSplits Build(TextDomain domain, TextSplitSizes sizes, IReadOnlyDictionary<string, string> versions)
    {
        var docs = TextDocuments.Enumerate(domain)
            .Select(d => (Doc: d, Pos: HashPosition(domain.Name, d.Key)))
            .OrderBy(d => d.Pos).ThenBy(d => d.Doc.Key, StringComparer.Ordinal)
            .ToList();
        (byte[] Bytes, int Docs) Take(IEnumerable<TextDocument> part, int cap)
        {
            var ms = new MemoryStream();
            int count = 0;
            foreach (var d in part)
            {
                if (ms.Length >= cap) break;
                if (d.Read() is not { } text || text.Trim().Length == 0) continue;
                var bytes = Encoding.UTF8.GetBytes((count > 0 ? Separator : "") + text.Trim());
                ms.Write(bytes, 0, (int)Math.Min(bytes.Length, cap - ms.Length));
                count++;
            }
            return (ms.ToArray(), count);
        }
        var test = Take(docs.Where(d => d.Pos < TestFraction).Select(d => d.Doc), sizes.TestBytes);
        var validation = Take(docs.Where(d => d.Pos >= TestFraction && d.Pos < TestFraction + ValidationFraction).Select(d => d.Doc), sizes.ValidationBytes);
        var train = Take(docs.Where(d => d.Pos >= TestFraction + ValidationFraction).Select(d => d.Doc), sizes.TrainBytes);
        foreach (var (name, part, cap) in new[] { ("train", train, sizes.TrainBytes), ("validation", validation, sizes.ValidationBytes), ("test", test, sizes.TestBytes) })
            if (part.Bytes.Length < Math.Min(cap, 1024))
                throw new DataNotInstalledException($"text domain '{domain.Name}': its {name} split has only {part.Bytes.Length} bytes; are its packages ({string.Join(", ", domain.Packages)}) complete? Reinstall with: {InstallCommand}");
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var b in new[] { train.Bytes, validation.Bytes, test.Bytes }) sha.AppendData(b);
        var info = new TextSplitInfo(domain.Name, versions, docs.Count, [train.Docs, validation.Docs, test.Docs],
            [train.Bytes.Length, validation.Bytes.Length, test.Bytes.Length], Hex(sha.GetHashAndReset(), 16));
        return new TextSplits(domain, train.Bytes, validation.Bytes, test.Bytes, info);
    }
}
