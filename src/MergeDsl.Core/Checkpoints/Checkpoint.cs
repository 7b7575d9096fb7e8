using TorchSharp;

using MergeDsl.Core.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// A safetensors checkpoint opened for reading: one file, a sharded Hugging Face folder, or a folder of
/// safetensors files. Every header is validated at open; tensor data is memory-mapped and read lazily.
/// </summary>
public sealed unsafe class Checkpoint : ITensorSource
{
    /// <summary>The Hugging Face index file naming each tensor's shard.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>The single-file weights name in a Hugging Face folder.</summary>
    public const string SingleFileName = "model.safetensors";

    readonly IReadOnlyList<MappedShard> _shards;
    readonly Dictionary<string, (TensorInfo Info, MappedShard Shard)> _byName;
    readonly bool _zeroCopy;
    int _disposed;

    Checkpoint(string path, string? folder, string? indexFile, IReadOnlyList<MappedShard> shards,
        Dictionary<string, (TensorInfo, MappedShard)> byName, IReadOnlyList<TensorInfo> tensors,
        IReadOnlyDictionary<string, string> metadata, bool zeroCopy)
    {
        Path = path;
        Folder = folder;
        IndexFile = indexFile;
        _shards = shards;
        _byName = byName;
        Tensors = tensors;
        Metadata = metadata;
        _zeroCopy = zeroCopy;
    }

    /// <summary>The file or folder opened.</summary>
    public string Path { get; }

    /// <summary>The Hugging Face model folder (for config.json and friends); null for a bare file.</summary>
    public string? Folder { get; }

    /// <summary>The index file, when the checkpoint is sharded through one.</summary>
    public string? IndexFile { get; }

    /// <summary>The safetensors files, in the order their tensors are listed.</summary>
    public IReadOnlyList<string> Shards => _shards.Select(s => s.File).ToList();

    /// <inheritdoc/>
    public string Label => Path;

    /// <inheritdoc/>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Total bytes of tensor data.</summary>
    public long TotalBytes => Tensors.Sum(t => t.ByteLength);

    /// <summary>
    /// Opens <paramref name="path"/>: a .safetensors file, a model.safetensors.index.json file, or a folder
    /// holding model.safetensors.index.json, model.safetensors, one *.safetensors.index.json, or *.safetensors files.
    /// Files are opened through <see cref="ModelFiles.OpenRead"/>: regular files only, links followed only
    /// inside the model folder (the folder named, or the one holding the file named) or from a Hugging Face
    /// cache snapshot into its blobs/, and never in an unfinished output folder.
    /// </summary>
    /// <param name="path">File or folder.</param>
    /// <param name="zeroCopy">Load tensors as views of the mapped file where alignment allows (else one copy each).</param>
    /// <param name="policy">Link policy; null: <see cref="InputFilePolicy.FromEnvironment"/>.</param>
    /// <exception cref="CheckpointFormatException">A file is malformed or refused.</exception>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="path"/>, or a folder without safetensors files.</exception>
    public static Checkpoint Open(string path, bool zeroCopy = true, InputFilePolicy? policy = null) =>
        Open(path, null, zeroCopy, policy);

    /// <summary>
    /// <see cref="Open(string, bool, InputFilePolicy?)"/> for a file inside a model folder's subfolder (a head
    /// under heads/): <paramref name="modelFolder"/> is the folder whose link rule and marker apply.
    /// </summary>
    internal static Checkpoint Open(string path, string? modelFolder, bool zeroCopy, InputFilePolicy? policy)
    {
        policy ??= InputFilePolicy.FromEnvironment();
        if (Directory.Exists(path))
        {
            ModelFiles.RefuseUnfinished(path);
            string root = modelFolder ?? path;
            string index = System.IO.Path.Combine(path, IndexFileName);
            // lstat, not File.Exists: a dangling link (an interrupted hub download) is refused by name, not skipped.
            if (Present(index)) return OpenIndexed(path, index, path, root, zeroCopy, policy);
            string single = System.IO.Path.Combine(path, SingleFileName);
            if (Present(single)) return OpenFiles(path, path, [single], root, zeroCopy, policy);
            var otherIndexes = Directory.GetFiles(path, "*.safetensors.index.json");
            if (otherIndexes.Length == 1) return OpenIndexed(path, otherIndexes[0], path, root, zeroCopy, policy);
            var files = Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToList();
            if (files.Count == 0)
                throw new FileNotFoundException($"{path}: folder holds no *.safetensors file{TorchCheckpoint.ConvertHint(path)}", path);
            return OpenFiles(path, path, files, root, zeroCopy, policy);
        }
        if (Present(path))
        {
            string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
            string root = modelFolder ?? dir;
            if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
                return OpenIndexed(path, path, dir, root, zeroCopy, policy);
            return OpenFiles(path, null, [path], root, zeroCopy, policy);
        }
        throw new FileNotFoundException($"{path}: no such file or folder", path);
    }

    static bool Present(string path) => UnixFiles.TryStat(path, followLinks: false) is not null;

    static Checkpoint OpenFiles(string path, string? folder, IReadOnlyList<string> files, string modelFolder, bool zeroCopy, InputFilePolicy policy)
    {
        var shards = new List<MappedShard>();
        try
        {
            foreach (var f in files) shards.Add(MappedShard.Open(f, modelFolder, policy));
            var byName = new Dictionary<string, (TensorInfo, MappedShard)>(StringComparer.Ordinal);
            var tensors = new List<TensorInfo>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var shard in shards)
            {
                foreach (var t in shard.Header.Tensors)
                {
                    if (byName.TryGetValue(t.Name, out var earlier))
                        throw new CheckpointFormatException(shard.File, $"tensor '{t.Name}' also appears in {earlier.Item1.File}");
                    byName[t.Name] = (t, shard);
                    tensors.Add(t);
                }
                foreach (var (k, v) in shard.Header.Metadata) metadata.TryAdd(k, v);
            }
            return new Checkpoint(path, folder, null, shards, byName, tensors, metadata, zeroCopy);
        }
        catch
        {
            foreach (var s in shards) s.ReleaseOwner();
            throw;
        }
    }

    static Checkpoint OpenIndexed(string path, string indexFile, string folder, string modelFolder, bool zeroCopy, InputFilePolicy policy)
    {
        var weightMap = ParseIndex(indexFile, ModelFiles.ReadAll(indexFile, ModelFiles.MaxJsonBytes, modelFolder, policy));
        var shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).ToList();
        var files = new List<string>();
        foreach (var shardName in shardNames)
        {
            string file = System.IO.Path.Combine(folder, shardName);
            if (!Present(file))
            {
                string example = weightMap.First(kv => kv.Value == shardName).Key;
                throw new CheckpointFormatException(indexFile, $"shard '{shardName}' (named for tensor '{example}') does not exist");
            }
            files.Add(file);
        }
        // Shards in numeric-name order, so tensors list in the order the model was saved.
        files.Sort(StringComparer.Ordinal);
        var cp = OpenFiles(path, folder, files, modelFolder, zeroCopy, policy);
        try
        {
            foreach (var (name, shardName) in weightMap)
            {
                string expected = System.IO.Path.Combine(folder, shardName);
                if (!cp._byName.TryGetValue(name, out var found))
                    throw new CheckpointFormatException(indexFile, $"tensor '{name}' is mapped to '{shardName}' but that shard does not contain it");
                if (found.Info.File != expected)
                    throw new CheckpointFormatException(indexFile, $"tensor '{name}' is mapped to '{shardName}' but lives in '{System.IO.Path.GetFileName(found.Info.File)}'");
            }
            foreach (var t in cp.Tensors)
            {
                if (!weightMap.ContainsKey(t.Name))
                    throw new CheckpointFormatException(indexFile, $"tensor '{t.Name}' in '{System.IO.Path.GetFileName(t.File)}' is missing from the weight_map");
            }
            return new Checkpoint(path, folder, indexFile, cp._shards, cp._byName, cp.Tensors, cp.Metadata, zeroCopy);
        }
        catch
        {
            cp.Dispose();
            throw;
        }
    }

    /// <summary>Parses an index file's bytes into its weight_map, strictly.</summary>
    internal static Dictionary<string, string> ParseIndex(string indexFile, ReadOnlySpan<byte> bytes)
    {
        JsonNode root;
        try
        {
            root = StrictJson.Parse(bytes);
        }
        catch (JsonSyntaxException e)
        {
            throw new CheckpointFormatException(indexFile, $"index is not valid JSON: {e.Message}");
        }
        if (root is not JsonObject obj)
            throw new CheckpointFormatException(indexFile, $"index is {root.Kind}, not a JSON object");
        if (obj["metadata"] is { } meta and not JsonObject)
            throw new CheckpointFormatException(indexFile, $"index metadata is {meta.Kind}, not an object");
        if (obj["weight_map"] is not { } wm)
            throw new CheckpointFormatException(indexFile, "index has no weight_map");
        if (wm is not JsonObject map)
            throw new CheckpointFormatException(indexFile, $"weight_map is {wm.Kind}, not an object");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, v) in map.Members)
        {
            if (v is not JsonString s)
                throw new CheckpointFormatException(indexFile, $"weight_map entry for '{name}' is {v.Kind}, not a file name");
            if (s.Value.Length == 0 || s.Value.Contains('/') || s.Value.Contains('\\') || s.Value == ".." || s.Value == "." || s.Value.Contains('\0'))
                throw new CheckpointFormatException(indexFile, $"weight_map entry for '{name}' names '{s.Value}', not a file in the folder");
            result[name] = s.Value;
        }
        return result;
    }

    /// <summary>
    /// Throws <see cref="CheckpointFormatException"/> when a file of this checkpoint changed (size, mtime or
    /// inode) since it was opened. Loads check it per tensor; a merge checks it once more before committing.
    /// </summary>
    public void EnsureUnchanged()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        foreach (var s in _shards) s.EnsureUnchanged();
    }

    /// <inheritdoc/>
    public bool TryGetInfo(string name, out TensorInfo info)
    {
        if (_byName.TryGetValue(name, out var e)) { info = e.Info; return true; }
        info = null!;
        return false;
    }

    (TensorInfo Info, MappedShard Shard) Find(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return _byName.TryGetValue(name, out var e) ? e : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");
    }

    /// <summary>
    /// Loads a tensor on the CPU. When possible it views the mapped file without copying (the mapping
    /// stays alive until the tensor is disposed, even after the checkpoint is). F8 tensors load as their
    /// raw bytes (<c>Byte</c>, same shape): TorchSharp 0.107 has no Float8 type.
    /// </summary>
    public torch.Tensor Load(string name)
    {
        var (info, shard) = Find(name);
        shard.EnsureUnchanged();
        var type = DTypes.LoadedAs(info.DType);
        byte* p = shard.At(info.DataOffset);
        if (_zeroCopy && info.ByteLength > 0)
        {
            var view = NativeTensors.TryView(shard, p, info.Shape, type, DTypes.SizeOf(info.DType));
            if (view is not null) return view;
        }
        // The copy reads every page: page them in first, where a truncated file is an error, not SIGBUS.
        if (info.ByteLength > 0 && NativeTensors.Populate((IntPtr)p, info.ByteLength) == NativeTensors.PageIn.Unreadable)
            throw TruncatedWhileReading(info);
        return NativeTensors.Copy(p, info.ByteLength, info.Shape, type);
    }

    /// <summary>The error for a tensor whose pages can no longer be read.</summary>
    internal static CheckpointFormatException TruncatedWhileReading(TensorInfo info) =>
        new(info.File, $"tensor '{info.Name}' can no longer be read: the file was truncated while being read; the run stops rather than read a file being rewritten");

    /// <summary>The tensor's bytes in the mapped file, valid while the checkpoint is open (at most 2 GiB).</summary>
    public ReadOnlySpan<byte> RawBytes(string name)
    {
        var (info, shard) = Find(name);
        shard.EnsureUnchanged();
        if (info.ByteLength > 0 && NativeTensors.Populate((IntPtr)shard.At(info.DataOffset), info.ByteLength) == NativeTensors.PageIn.Unreadable)
            throw TruncatedWhileReading(info);
        if (info.ByteLength > int.MaxValue)
            throw new NotSupportedException($"{info.File}: tensor '{name}' is {info.ByteLength} bytes, over the 2 GiB a span can hold");
        return new ReadOnlySpan<byte>(shard.At(info.DataOffset), (int)info.ByteLength);
    }

    /// <summary>References held on the mappings (1 per open shard plus 1 per live zero-copy view).</summary>
    internal int MappingReferences => _shards.Sum(s => s.References);

    /// <summary>Address of the tensor's first byte in the mapping (tests check zero-copy views against it).</summary>
    internal IntPtr Address(string name)
    {
        var (info, shard) = Find(name);
        return (IntPtr)shard.At(info.DataOffset);
    }

    /// <summary>Releases the mappings; zero-copy tensors still alive keep theirs until disposed.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var s in _shards) s.ReleaseOwner();
    }
}
