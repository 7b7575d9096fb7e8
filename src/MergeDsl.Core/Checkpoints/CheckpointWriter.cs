using System.Collections.Concurrent;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Writes a safetensors checkpoint whose layout is known up front (the compiler knows every output's
/// name, dtype and shape): shards and headers are planned first, so tensors can then be written in any
/// order, from any thread. Output goes to a temporary folder beside the target and is renamed into
/// place by <see cref="Commit"/>; disposing without committing deletes it, leaving the target untouched.
/// </summary>
public sealed unsafe class CheckpointWriter : IDisposable
{
    sealed record Planned(string Name, DType DType, long[] Shape, long ByteLength, int Shard, long Offset);

    sealed class ShardFile(string fileName, SafeFileHandle handle)
    {
        public string FileName { get; } = fileName;
        public SafeFileHandle Handle { get; } = handle;
    }

    /// <summary>Largest span handed to one write call.</summary>
    const int ChunkBytes = 1 << 30;

    readonly string _target;
    readonly string _temp;
    readonly OutputFolder _output;
    readonly bool _ownsOutput;
    readonly CheckpointWriterOptions _options;
    readonly Dictionary<string, Planned> _plan;
    readonly IReadOnlyList<(string Name, DType DType, long[] Shape)> _layout;
    readonly List<ShardFile?> _shards = new();
    readonly ConcurrentDictionary<string, bool> _written = new(StringComparer.Ordinal);
    readonly IReadOnlyList<string> _copyThrough;
    readonly int[] _remaining;
    readonly ConcurrentDictionary<int, ShardRecord> _completed = new();
    readonly HashSet<int> _resumed = new();
    readonly object _journalGate = new();
    bool _committed;
    bool _disposed;

    CheckpointWriter(string target, IReadOnlyList<(string, DType, long[])> layout, CheckpointWriterOptions options)
    {
        _options = options;
        _layout = layout;
        if (options.MaxShardBytes <= 0)
            throw new ArgumentException($"MaxShardBytes must be positive, got {options.MaxShardBytes}", nameof(options));
        _plan = Plan(layout, options.MaxShardBytes, out var shardContents);
        if (options.OnlyShards is { } only && only.Any(s => s < 0 || s >= shardContents.Count))
            throw new ArgumentException($"a part's shards must lie in 0..{shardContents.Count - 1}", nameof(options));
        _remaining = shardContents.Select(c => c.Count).ToArray();
        // Chosen (and refused) before anything is written, so a bad tokenizer link fails the run before the merge.
        var replaced = new HashSet<string>(options.SkipCopiedFiles.Concat(options.CopyFilesAlso.Select(f => f.Name)), StringComparer.Ordinal);
        _copyThrough = options.CopyFilesFrom is { } copyFrom
            ? HfFiles.CopyThroughFiles(copyFrom).Where(f => !replaced.Contains(System.IO.Path.GetFileName(f))).ToList()
            : [];
        var policy = InputFilePolicy.FromEnvironment();
        foreach (var (folder, name) in options.CopyFilesAlso) ModelFiles.Check(System.IO.Path.Combine(folder, name), folder, policy);
        _ownsOutput = options.Output is null;
        _output = options.Output ?? OutputFolder.Reserve(target, options.Overwrite);
        _target = _output.Target;
        try
        {
            if (!_ownsOutput && !string.Equals(RealPath.Resolve(target), _target, StringComparison.Ordinal))
                throw new ArgumentException($"{target}: is not the reserved output {_target}", nameof(target));
            _temp = (options.Resume && options.RunIdentity is { } identity ? _output.AdoptTemporary(identity) : null)
                ?? _output.CreateTemporary();
        }
        catch
        {
            if (_ownsOutput) _output.Dispose();
            throw;
        }
        try
        {
            var metadata = new Dictionary<string, string>(options.Metadata, StringComparer.Ordinal);
            metadata.TryAdd("format", "pt");
            int n = shardContents.Count;
            var kept = KeepVerifiedShards(n);
            for (int s = 0; s < n; s++)
            {
                string fileName = n == 1 ? options.SingleFileName : ShardFileName(s, n);
                byte[] header = Header(shardContents[s], metadata, out long dataStart);
                foreach (var p in shardContents[s])
                    _plan[p.Name] = p with { Offset = dataStart + p.Offset };
                if (options.OnlyShards is { } subset && !subset.Contains(s))
                {
                    _shards.Add(null);
                    continue;
                }
                long dataBytes = shardContents[s].Sum(p => p.ByteLength);
                string path = System.IO.Path.Combine(_temp, fileName);
                if (kept.TryGetValue(s, out var record) && record.FileName == fileName && record.Bytes == dataStart + dataBytes)
                {
                    _shards.Add(new ShardFile(fileName, File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None, FileOptions.RandomAccess)));
                    foreach (var p in shardContents[s]) _written[p.Name] = true;
                    _remaining[s] = 0;
                    _completed[s] = record;
                    _resumed.Add(s);
                    continue;
                }
                File.Delete(path);
                var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite,
                    FileShare.None, FileOptions.RandomAccess, preallocationSize: 8 + header.Length + dataBytes);
                _shards.Add(new ShardFile(fileName, handle));
                RandomAccess.SetLength(handle, dataStart + dataBytes);
                var prefix = new byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                RandomAccess.Write(handle, prefix, 0);
                RandomAccess.Write(handle, header, 8);
            }
            if (options.RunIdentity is { } id)
            {
                ShardJournal.Create(_temp, id);
                foreach (var r in _completed.Values.OrderBy(r => r.Index)) ShardJournal.Append(_temp, r);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Plans the output and creates its temporary folder.</summary>
    /// <param name="targetFolder">The folder the checkpoint will appear at on <see cref="Commit"/>.</param>
    /// <param name="layout">Every tensor's name, dtype and shape, in the order they should be listed.</param>
    /// <param name="options">Sharding, metadata, copy-through and overwrite choices.</param>
    public static CheckpointWriter Create(string targetFolder, IReadOnlyList<(string Name, DType DType, long[] Shape)> layout, CheckpointWriterOptions options) =>
        new(targetFolder, layout, options);

    /// <summary>The folder the checkpoint appears at on <see cref="Commit"/>.</summary>
    public string Target => _target;

    /// <summary>The temporary folder being written.</summary>
    public string TemporaryFolder => _temp;

    /// <summary>The shard file names this writer writes, in order.</summary>
    public IReadOnlyList<string> ShardFileNames => _shards.Where(s => s is not null).Select(s => s!.FileName).ToList();

    /// <summary>Shards complete so far (those kept from a resumed run included), by index.</summary>
    public IReadOnlyList<ShardRecord> CompletedShards => _completed.Values.OrderBy(r => r.Index).ToList();

    /// <summary>Shards kept from the dead run this writer resumed (verified by their hashes), by index.</summary>
    public IReadOnlyList<int> ResumedShards => _resumed.Order().ToList();

    /// <summary>True when <paramref name="name"/> is already in the output (kept from a resumed run, or written).</summary>
    public bool IsWritten(string name) => _written.ContainsKey(name);

    /// <summary>A shard's file name: <c>model.safetensors</c> alone, else <c>model-0000i-of-0000n.safetensors</c>.</summary>
    public static string ShardFileName(int index, int count) =>
        count == 1 ? Checkpoint.SingleFileName : $"model-{index + 1:D5}-of-{count:D5}.safetensors";

    /// <summary>
    /// How <see cref="Create"/> splits <paramref name="layout"/> into shards with at most <paramref name="maxShardBytes"/>
    /// each: per shard, its file name and its tensors' names (layout order) and byte lengths. A partitioned merge assigns
    /// whole shards to parts, so every part writes files identical to those of a run on one machine.
    /// </summary>
    public static IReadOnlyList<(string FileName, IReadOnlyList<(string Name, long Bytes)> Tensors)> Shards(
        IReadOnlyList<(string Name, DType DType, long[] Shape)> layout, long maxShardBytes)
    {
        if (maxShardBytes <= 0) throw new ArgumentException($"MaxShardBytes must be positive, got {maxShardBytes}", nameof(maxShardBytes));
        var plan = Plan(layout, maxShardBytes, out var shards);
        var byShard = layout.GroupBy(l => plan[l.Name].Shard).ToDictionary(g => g.Key, g => g.Select(l => (l.Name, plan[l.Name].ByteLength)).ToList());
        return Enumerable.Range(0, shards.Count)
            .Select(s => (ShardFileName(s, shards.Count), (IReadOnlyList<(string, long)>)(byShard.TryGetValue(s, out var ts) ? ts : [])))
            .ToList();
    }

    /// <summary>Writes a tensor and its dtype conversion into a shard. <see cref="DType.F8E4M3"/> and
    /// <see cref="DType.F8E5M2"/> take the raw bytes as a Byte tensor of the planned shape.</summary>
    public void Write(string name, torch.Tensor tensor)
    {
        var p = Planned_(name);
        if (!tensor.shape.SequenceEqual(p.Shape))
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", tensor.shape)}] differs from the planned [{string.Join(", ", p.Shape)}]");
        var type = DTypes.LoadedAs(p.DType);
        if (DTypes.IsFloat8(p.DType) && tensor.dtype != torch.ScalarType.Byte)
            throw new ArgumentException($"tensor '{name}': {DTypes.ToSafetensorsName(p.DType)} is written from its raw bytes (a Byte tensor); TorchSharp 0.107 has no Float8 type, got {tensor.dtype}");
        using var scope = torch.NewDisposeScope();
        var ready = tensor.device_type == DeviceType.CPU ? tensor : tensor.cpu();
        if (ready.dtype != type) ready = ready.to(type);
        ready = ready.contiguous();
        Claim(p);
        try
        {
            byte* src = (byte*)NativeTensors.DataPointer(ready);
            WriteChunks(p, src);
        }
        catch
        {
            _written.TryRemove(name, out _);
            throw;
        }
        Written(p);
    }

    /// <summary>Writes a tensor's raw bytes (little-endian, row-major); the length must match the plan.</summary>
    public void WriteBytes(string name, ReadOnlySpan<byte> bytes)
    {
        var p = Planned_(name);
        if (bytes.Length != p.ByteLength)
            throw new ArgumentException($"tensor '{name}': {bytes.Length} bytes given, the plan needs {p.ByteLength}");
        Claim(p);
        try
        {
            RandomAccess.Write(_shards[p.Shard]!.Handle, bytes, p.Offset);
        }
        catch
        {
            _written.TryRemove(name, out _);
            throw;
        }
        Written(p);
    }

    /// <summary>Counts a written tensor; the shard's last one flushes it, hashes and journals it (with a run identity).</summary>
    void Written(Planned p)
    {
        if (Interlocked.Decrement(ref _remaining[p.Shard]) != 0) return;
        var shard = _shards[p.Shard]!;
        RandomAccess.FlushToDisk(shard.Handle);
        var record = new ShardRecord(p.Shard, shard.FileName, RandomAccess.GetLength(shard.Handle),
            _options.RunIdentity is null ? "" : ShardJournal.HashHandle(shard.Handle));
        if (_options.RunIdentity is not null)
            lock (_journalGate) ShardJournal.Append(_temp, record);
        _completed[p.Shard] = record;
        _options.ShardCompleted?.Invoke(record);
    }

    /// <summary>
    /// In a folder adopted from a dead run: the journaled shards whose files still hash to their journaled value; every
    /// other file of the dead run except its marker is removed (a half-written shard, an index, a model card).
    /// </summary>
    Dictionary<int, ShardRecord> KeepVerifiedShards(int shardCount)
    {
        var kept = new Dictionary<int, ShardRecord>();
        var journal = ShardJournal.TryRead(_temp);
        if (journal is null) return kept;
        foreach (var r in journal.Value.Shards)
        {
            if (r.Index < 0 || r.Index >= shardCount || r.FileName != ShardFileName(r.Index, shardCount)) continue;
            if (_options.OnlyShards is { } only && !only.Contains(r.Index)) continue;
            var file = new FileInfo(System.IO.Path.Combine(_temp, r.FileName));
            if (file.Exists && file.LinkTarget is null && file.Length == r.Bytes && ShardJournal.HashFile(file.FullName) == r.Sha256)
                kept[r.Index] = r;
        }
        var keep = kept.Values.Select(r => r.FileName).Append(OutputMarkers.Unfinished).ToHashSet(StringComparer.Ordinal);
        foreach (var entry in new DirectoryInfo(_temp).EnumerateFileSystemInfos())
        {
            if (keep.Contains(entry.Name)) continue;
            if (entry is DirectoryInfo d && d.LinkTarget is null) d.Delete(recursive: true);
            else entry.Delete();
        }
        return kept;
    }

    void WriteChunks(Planned p, byte* src)
    {
        var handle = _shards[p.Shard]!.Handle;
        for (long done = 0; done < p.ByteLength;)
        {
            int n = (int)Math.Min(ChunkBytes, p.ByteLength - done);
            RandomAccess.Write(handle, new ReadOnlySpan<byte>(src + done, n), p.Offset + done);
            done += n;
        }
    }

    Planned Planned_(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_committed) throw new InvalidOperationException($"{_target}: already committed");
        if (!_plan.TryGetValue(name, out var p)) throw new ArgumentException($"tensor '{name}' is not in the planned layout of {_target}");
        if (_shards[p.Shard] is null) throw new ArgumentException($"tensor '{name}' belongs to shard {p.Shard + 1}, which this part does not write");
        return p;
    }

    void Claim(Planned p)
    {
        if (!_written.TryAdd(p.Name, true))
            throw new InvalidOperationException($"tensor '{p.Name}' written twice to {_target}");
    }

    /// <summary>
    /// Checks every tensor was written, flushes the shards, writes the index (several shards), copies
    /// small Hugging Face files through, and renames the temporary folder to the target.
    /// </summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_committed) return;
        var missing = _layout.Where(l => _shards[_plan[l.Name].Shard] is not null && !_written.ContainsKey(l.Name)).Select(l => l.Name).ToList();
        if (missing.Count > 0)
            throw new InvalidOperationException(
                $"{_target}: {missing.Count} tensor(s) never written: {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", ..." : "")}");
        foreach (var s in _shards)
        {
            if (s is null) continue;
            RandomAccess.FlushToDisk(s.Handle);
            s.Handle.Dispose();
        }
        bool whole = _options.OnlyShards is null;
        if (whole && _shards.Count > 1)
            WriteIndexFile(_temp, _layout.Select(l => _plan[l.Name]).Select(p => (p.Name, _shards[p.Shard]!.FileName, p.ByteLength)));
        if (whole && _options.CopyFilesFrom is { } source) HfFiles.CopyInto(source, _copyThrough, _temp);
        if (whole)
            foreach (var (folder, name) in _options.CopyFilesAlso) HfFiles.CopyInto(folder, [System.IO.Path.Combine(folder, name)], _temp);
        foreach (var (name, text) in _options.ExtraFiles.Concat(_lateFiles))
            File.WriteAllText(System.IO.Path.Combine(_temp, name), text);
        // Bookkeeping of this run, not part of the checkpoint.
        File.Delete(System.IO.Path.Combine(_temp, ShardJournal.FileName));
        _output.Commit(_temp);
        _committed = true;
    }

    readonly List<KeyValuePair<string, string>> _lateFiles = new();

    /// <summary>A small text file written into the folder at <see cref="Commit"/>, decided after the tensors (e.g. a
    /// part manifest listing the shards' hashes).</summary>
    public void AddFile(string name, string text)
    {
        if (name.Contains('/') || name.Contains('\\') || name is "." or ".." || name.Length == 0)
            throw new ArgumentException($"'{name}' is not a plain file name", nameof(name));
        _lateFiles.Add(new(name, text));
    }

    /// <summary>Writes <c>model.safetensors.index.json</c> into <paramref name="folder"/> from every tensor's name, shard file
    /// and byte length: the same bytes whether one run wrote every shard or a finalize step joins parts.</summary>
    public static void WriteIndexFile(string folder, IEnumerable<(string Name, string File, long Bytes)> tensors)
    {
        var all = tensors.ToList();
        var weightMap = all.OrderBy(p => p.Name, StringComparer.Ordinal);
        using var stream = new FileStream(System.IO.Path.Combine(folder, Checkpoint.IndexFileName), FileMode.CreateNew);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteStartObject("metadata");
        w.WriteNumber("total_size", all.Sum(p => p.Bytes));
        w.WriteEndObject();
        w.WriteStartObject("weight_map");
        foreach (var p in weightMap) w.WriteString(p.Name, p.File);
        w.WriteEndObject();
        w.WriteEndObject();
        w.Flush();
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Without <see cref="Commit"/>: deletes the temporary folder; the target is untouched.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var s in _shards) s?.Handle.Dispose();
        if (!_committed && Directory.Exists(_temp)) Directory.Delete(_temp, recursive: true);
        if (_ownsOutput) _output.Dispose();
    }

    /// <summary>Writes every tensor of <paramref name="tensors"/> (in name order) and commits.</summary>
    public static void WriteAll(string targetFolder, IReadOnlyDictionary<string, torch.Tensor> tensors, CheckpointWriterOptions options)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var layout = names.Select(n => (n, DTypes.FromTorch(tensors[n].dtype), tensors[n].shape)).ToList();
        using var w = Create(targetFolder, layout, options);
        foreach (var n in names) w.Write(n, tensors[n]);
        w.Commit();
    }

    /// <summary>
    /// Greedy sharding in layout order: a shard closes when the next tensor would push it past the
    /// limit. Inside a shard, wider elements come first so every tensor starts aligned to its element
    /// size (the data area starts 8-aligned), which lets readers view it without copying.
    /// </summary>
    static Dictionary<string, Planned> Plan(IReadOnlyList<(string Name, DType DType, long[] Shape)> layout, long maxShardBytes,
        out List<List<Planned>> shards)
    {
        var plan = new Dictionary<string, Planned>(StringComparer.Ordinal);
        shards = new List<List<Planned>>();
        var current = new List<Planned>();
        long currentBytes = 0;
        foreach (var (name, dtype, shape) in layout)
        {
            if (plan.ContainsKey(name)) throw new ArgumentException($"tensor '{name}' appears twice in the layout");
            foreach (long d in shape)
                if (d < 0) throw new ArgumentException($"tensor '{name}': negative dimension in shape [{string.Join(", ", shape)}]");
            long bytes = shape.Aggregate(1L, (a, d) => checked(a * d)) * DTypes.SizeOf(dtype);
            if (current.Count > 0 && currentBytes + bytes > maxShardBytes)
            {
                shards.Add(current);
                current = new List<Planned>();
                currentBytes = 0;
            }
            var p = new Planned(name, dtype, shape.ToArray(), bytes, shards.Count, 0);
            current.Add(p);
            plan[name] = p;
            currentBytes += bytes;
        }
        shards.Add(current); // an empty layout still gets one (empty) file
        for (int s = 0; s < shards.Count; s++)
        {
            long offset = 0;
            var ordered = shards[s].OrderByDescending(p => DTypes.SizeOf(p.DType)).ToList(); // stable: keeps layout order per width
            for (int k = 0; k < ordered.Count; k++)
            {
                ordered[k] = ordered[k] with { Offset = offset };
                plan[ordered[k].Name] = ordered[k];
                offset += ordered[k].ByteLength;
            }
            shards[s] = ordered;
        }
        return plan;
    }

    /// <summary>The header JSON, padded with spaces to a multiple of 8; offsets in it are relative to the data area.</summary>
    static byte[] Header(List<Planned> tensors, IReadOnlyDictionary<string, string> metadata, out long dataStart)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
            w.WriteEndObject();
            foreach (var p in tensors)
            {
                w.WriteStartObject(p.Name);
                w.WriteString("dtype", DTypes.ToSafetensorsName(p.DType));
                w.WriteStartArray("shape");
                foreach (long d in p.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(p.Offset);
                w.WriteNumberValue(p.Offset + p.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        int length = (int)buffer.Length;
        int padded = (length + 7) / 8 * 8;
        var bytes = new byte[padded];
        buffer.GetBuffer().AsSpan(0, length).CopyTo(bytes);
        bytes.AsSpan(length).Fill((byte)' ');
        dataStart = 8 + padded;
        return bytes;
    }
}
