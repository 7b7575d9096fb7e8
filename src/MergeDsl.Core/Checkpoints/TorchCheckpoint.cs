using MergeDsl.Core.Checkpoints.Torch;
using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// A PyTorch checkpoint (<c>pytorch_model.bin</c>, <c>*.pt</c>, <c>*.pth</c>; zip or legacy <c>torch.save</c> format;
/// sharded through <c>pytorch_model.bin.index.json</c>) read through a restricted unpickler that rebuilds tensors,
/// storages and ordered dicts and runs no code. Nested dicts are flattened with '.'; entries that are not tensors
/// (an epoch counter) are listed in <see cref="Skipped"/>. Tensors are copied out of the file on <see cref="Load"/>;
/// merges read safetensors only, so such a checkpoint is converted first (<c>mergedsl convert</c>).
/// </summary>
public sealed class TorchCheckpoint : ITensorSource
{
    /// <summary>The Hugging Face name of a single-file PyTorch checkpoint.</summary>
    public const string SingleFileName = "pytorch_model.bin";

    /// <summary>The Hugging Face index of a sharded PyTorch checkpoint.</summary>
    public const string IndexFileName = "pytorch_model.bin.index.json";

    readonly IReadOnlyList<TorchFile> _files;
    readonly Dictionary<string, (TensorInfo Info, TorchTensorRef Ref, TorchFile File)> _byName;

    TorchCheckpoint(string path, string? folder, IReadOnlyList<TorchFile> files,
        Dictionary<string, (TensorInfo, TorchTensorRef, TorchFile)> byName, IReadOnlyList<TensorInfo> tensors, IReadOnlyList<string> skipped)
    {
        Path = path;
        Folder = folder;
        _files = files;
        _byName = byName;
        Tensors = tensors;
        Skipped = skipped;
    }

    /// <summary>The file or folder opened.</summary>
    public string Path { get; }

    /// <summary>The model folder (config.json and tokenizer), null for a bare file.</summary>
    public string? Folder { get; }

    /// <summary>Names of entries that are not tensors (not read).</summary>
    public IReadOnlyList<string> Skipped { get; }

    /// <inheritdoc/>
    public string Label => Path;

    /// <inheritdoc/>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();

    /// <summary>True for file names PyTorch checkpoints use (<c>.bin</c>, <c>.pt</c>, <c>.pth</c>).</summary>
    public static bool IsTorchFileName(string name) =>
        name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
        || name.EndsWith(".pth", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A hint for a folder without safetensors that holds PyTorch weights: " (it holds pytorch_model.bin: convert it
    /// first with `mergedsl convert F --out DIR`)", or "" when it holds none.
    /// </summary>
    public static string ConvertHint(string folder)
    {
        if (!Directory.Exists(folder)) return "";
        var torch = Directory.GetFiles(folder).Select(System.IO.Path.GetFileName).Where(n => IsTorchFileName(n!)).Order(StringComparer.Ordinal).ToList();
        if (torch.Count == 0) return "";
        string shown = Text.TerminalText.Sanitize(string.Join(", ", torch.Take(3)) + (torch.Count > 3 ? ", ..." : ""));
        return $"; it holds PyTorch pickle weights ({shown}): merges read safetensors only, convert them first with `mergedsl convert {Text.TerminalText.Sanitize(folder)} --out DIR`";
    }

    /// <summary>
    /// Opens <paramref name="path"/>: a <c>.bin</c>/<c>.pt</c>/<c>.pth</c> file, a <c>pytorch_model.bin.index.json</c>, or a
    /// folder holding an index, <c>pytorch_model.bin</c>, or exactly one such file. Files are opened under the
    /// hostile-folder rules (<see cref="ModelFiles"/>).
    /// </summary>
    /// <exception cref="CheckpointFormatException">Malformed, refused (a disallowed pickle global is named), or ambiguous.</exception>
    /// <exception cref="FileNotFoundException">Nothing to read at <paramref name="path"/>.</exception>
    public static TorchCheckpoint Open(string path, InputFilePolicy? policy = null)
    {
        policy ??= InputFilePolicy.FromEnvironment();
        string? folder = null;
        string modelFolder;
        List<string> files;
        Dictionary<string, string>? weightMap = null;
        if (Directory.Exists(path))
        {
            folder = modelFolder = path;
            ModelFiles.RefuseUnfinished(path);
            string index = System.IO.Path.Combine(path, IndexFileName);
            string single = System.IO.Path.Combine(path, SingleFileName);
            if (File.Exists(index)) (files, weightMap) = FromIndex(index, path, policy);
            else if (File.Exists(single)) files = [single];
            else
            {
                files = Directory.GetFiles(path).Where(f => IsTorchFileName(f)).Order(StringComparer.Ordinal).ToList();
                if (files.Count == 0) throw new FileNotFoundException($"{path}: folder holds no {SingleFileName}, {IndexFileName}, *.pt or *.pth file", path);
                if (files.Count > 1)
                    throw new CheckpointFormatException(path, $"holds several PyTorch files ({Text.TerminalText.Sanitize(string.Join(", ", files.Select(System.IO.Path.GetFileName)))}); name the one to read");
            }
        }
        else if (File.Exists(path))
        {
            modelFolder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
            if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
            {
                (files, weightMap) = FromIndex(path, modelFolder, policy);
                folder = modelFolder;
            }
            else files = [path];
        }
        else throw new FileNotFoundException($"{path}: no such file or folder", path);

        var opened = new List<TorchFile>();
        try
        {
            var byName = new Dictionary<string, (TensorInfo, TorchTensorRef, TorchFile)>(StringComparer.Ordinal);
            var tensors = new List<TensorInfo>();
            var skipped = new List<string>();
            foreach (var f in files)
            {
                var tf = TorchFile.Open(f, modelFolder, policy);
                opened.Add(tf);
                foreach (var (name, value) in Flatten(tf))
                {
                    if (value is not TorchTensorRef t)
                    {
                        skipped.Add(name);
                        continue;
                    }
                    if (byName.TryGetValue(name, out var earlier))
                        throw new CheckpointFormatException(f, $"tensor '{Text.TerminalText.Sanitize(name)}' also appears in {earlier.Item1.File}");
                    if (weightMap is not null && (!weightMap.TryGetValue(name, out var mapped) || mapped != System.IO.Path.GetFileName(f)))
                        throw new CheckpointFormatException(f, $"tensor '{Text.TerminalText.Sanitize(name)}' is not mapped to this file by the index");
                    long numel = t.Size.Aggregate(1L, (a, d) => checked(a * d));
                    var info = new TensorInfo(name, t.Storage.DType, t.Size, f, 0, numel * DTypes.SizeOf(t.Storage.DType));
                    byName[name] = (info, t, tf);
                    tensors.Add(info);
                }
            }
            if (weightMap is not null)
                foreach (var name in weightMap.Keys)
                    if (!byName.ContainsKey(name))
                        throw new CheckpointFormatException(path, $"the index maps tensor '{Text.TerminalText.Sanitize(name)}' to {weightMap[name]}, which does not hold it");
            return new TorchCheckpoint(path, folder, opened, byName, tensors, skipped);
        }
        catch
        {
            foreach (var f in opened) f.Dispose();
            throw;
        }
    }

    static (List<string>, Dictionary<string, string>) FromIndex(string index, string folder, InputFilePolicy policy)
    {
        var map = Checkpoint.ParseIndex(index, ModelFiles.ReadAll(index, ModelFiles.MaxJsonBytes, folder, policy));
        var files = map.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)
            .Select(f => System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(index))!, f)).ToList();
        return (files, map);
    }

    static IEnumerable<(string Name, object? Value)> Flatten(TorchFile file)
    {
        if (file.Root is not PickleDict root)
            throw new CheckpointFormatException(file.File, "does not hold a dict of tensors (a state_dict); whole pickled models are not read");
        var result = new List<(string, object?)>();
        void Walk(string prefix, PickleDict d, int depth)
        {
            if (depth > 16) throw new CheckpointFormatException(file.File, "dicts nested deeper than 16 levels");
            foreach (var (k, v) in d.Items)
            {
                string key = k switch
                {
                    string s => s,
                    long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    _ => throw new CheckpointFormatException(file.File, "a dict key is neither a string nor an integer"),
                };
                string name = prefix.Length == 0 ? key : prefix + "." + key;
                if (v is PickleDict inner) Walk(name, inner, depth + 1);
                else result.Add((name, v));
            }
        }
        Walk("", root, 0);
        return result;
    }

    /// <inheritdoc/>
    public bool TryGetInfo(string name, out TensorInfo info)
    {
        if (_byName.TryGetValue(name, out var e))
        {
            info = e.Info;
            return true;
        }
        info = null!;
        return false;
    }

    /// <summary>Reads a tensor (a contiguous copy of its strided view of the storage).</summary>
    public torch.Tensor Load(string name)
    {
        if (!_byName.TryGetValue(name, out var e)) throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");
        var t = e.Ref;
        var type = DTypes.ToTorch(t.Storage.DType);
        if (t.Size.Contains(0)) return torch.empty(t.Size, dtype: type);
        long last = t.Offset;
        for (int i = 0; i < t.Size.Length; i++) last += (t.Size[i] - 1) * t.Stride[i];
        long count = last - t.Offset + 1;
        using var flat = torch.empty(count, dtype: type);
        e.File.Read(t.Storage, t.Offset, count, NativeTensors.DataPointer(flat));
        using var view = flat.as_strided(t.Size, t.Stride, 0);
        return view.contiguous();
    }

    /// <summary>Closes every file.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
