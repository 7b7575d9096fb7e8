using System.Security.Cryptography;
using System.Text.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// The journal of a temporary output folder (<see cref="FileName"/>): the run's identity on the first line, then one
/// JSON line per shard that was completely written, flushed and hashed. It is what lets a killed run be resumed: a
/// later run with the same identity keeps the shards whose bytes still hash to the journaled value. A line cut short
/// by a kill is ignored (that shard is simply redone).
/// </summary>
public static class ShardJournal
{
    /// <summary>The journal's file name inside a temporary output folder.</summary>
    public const string FileName = ".mergedsl-journal";

    /// <summary>Starts a journal for a run of <paramref name="identity"/> in <paramref name="folder"/>.</summary>
    public static void Create(string folder, string identity)
    {
        using var stream = new FileStream(Path.Combine(folder, FileName), FileMode.CreateNew, FileAccess.Write);
        stream.Write(JsonSerializer.SerializeToUtf8Bytes(new { identity }));
        stream.WriteByte((byte)'\n');
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Appends a finished shard (the shard's bytes must already be on disk).</summary>
    public static void Append(string folder, ShardRecord shard)
    {
        using var stream = new FileStream(Path.Combine(folder, FileName), FileMode.Append, FileAccess.Write);
        stream.Write(JsonSerializer.SerializeToUtf8Bytes(new { index = shard.Index, file = shard.FileName, bytes = shard.Bytes, sha256 = shard.Sha256 }));
        stream.WriteByte((byte)'\n');
        stream.Flush(flushToDisk: true);
    }

    /// <summary>The identity and finished shards of <paramref name="folder"/>'s journal; null when it has none or its first line is unreadable.</summary>
    public static (string Identity, IReadOnlyList<ShardRecord> Shards)? TryRead(string folder)
    {
        string path = Path.Combine(folder, FileName);
        var info = new FileInfo(path);
        if (!info.Exists || info.LinkTarget is not null) return null;
        string[] lines;
        try { lines = File.ReadAllLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        if (lines.Length == 0) return null;
        string? identity;
        try
        {
            using var head = JsonDocument.Parse(lines[0]);
            identity = head.RootElement.GetProperty("identity").GetString();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { return null; }
        if (identity is null) return null;
        var shards = new List<ShardRecord>();
        foreach (var line in lines.Skip(1))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var o = doc.RootElement;
                shards.Add(new ShardRecord(o.GetProperty("index").GetInt32(), o.GetProperty("file").GetString()!,
                    o.GetProperty("bytes").GetInt64(), o.GetProperty("sha256").GetString()!));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { }
        }
        return (identity, shards);
    }

    /// <summary>SHA-256 of a file, lower-case hex.</summary>
    public static string HashFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>SHA-256 of an open file's whole content, read through its handle (the writer holds the file exclusively).</summary>
    public static string HashHandle(Microsoft.Win32.SafeHandles.SafeFileHandle handle)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        long length = RandomAccess.GetLength(handle);
        for (long offset = 0; offset < length;)
        {
            int n = RandomAccess.Read(handle, buffer, offset);
            if (n <= 0) throw new IOException($"shard ended at {offset} of {length} bytes while hashing it");
            hash.AppendData(buffer, 0, n);
            offset += n;
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
