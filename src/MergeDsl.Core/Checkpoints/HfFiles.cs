namespace MergeDsl.Core.Checkpoints;

/// <summary>Which files of a Hugging Face model folder travel with merged weights.</summary>
public static class HfFiles
{
    static readonly string[] WeightExtensions =
        [".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot", ".npz", ".pkl", ".tflite"];

    static readonly string[] SmallExtensions = [".json", ".txt", ".model", ".tiktoken", ".py", ".jinja"];

    /// <summary>Files larger than this are not copied through (tokenizer.json of large vocabularies is ~20 MB).</summary>
    public const long MaxCopyBytes = 100_000_000;

    /// <summary>
    /// True for config.json, generation_config.json, tokenizer files, vocabularies, chat templates and
    /// other small non-weight files; false for weights (*.safetensors, *.bin, *.pt, ...), the weight index,
    /// hidden files and model cards (a merged model needs its own).
    /// </summary>
    public static bool IsCopiedThrough(string fileName)
    {
        string name = Path.GetFileName(fileName);
        if (name.StartsWith('.')) return false;
        if (name.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)) return false;
        if (WeightExtensions.Any(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase))) return false;
        if (name.StartsWith("tokenizer", StringComparison.OrdinalIgnoreCase)) return true;
        return SmallExtensions.Any(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>
    /// The files of <paramref name="folder"/> (top level only) that <see cref="IsCopiedThrough"/> accepts
    /// and that are at most <see cref="MaxCopyBytes"/>. Each must pass <see cref="ModelFiles.Check"/>
    /// (regular file, link rule): a refused one is an error naming it, never silently skipped, since users
    /// expect tokenizer files to come through.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">No such folder.</exception>
    /// <exception cref="CheckpointFormatException">A file is refused.</exception>
    public static IReadOnlyList<string> CopyThroughFiles(string folder, InputFilePolicy? policy = null)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such folder to copy files from");
        policy ??= InputFilePolicy.FromEnvironment();
        var chosen = new List<string>();
        foreach (var f in Directory.EnumerateFiles(folder).Where(IsCopiedThrough).Order(StringComparer.Ordinal))
        {
            if (ModelFiles.Check(f, folder, policy).Size <= MaxCopyBytes) chosen.Add(f);
        }
        return chosen;
    }

    /// <summary>
    /// Copies files chosen by <see cref="CopyThroughFiles"/> into <paramref name="destinationFolder"/>,
    /// opening each again through <see cref="ModelFiles.OpenRead"/> (it may have changed since) and never
    /// copying more than <see cref="MaxCopyBytes"/> of one.
    /// </summary>
    public static void CopyInto(string sourceFolder, IReadOnlyList<string> files, string destinationFolder, InputFilePolicy? policy = null)
    {
        policy ??= InputFilePolicy.FromEnvironment();
        var buffer = new byte[1 << 20];
        foreach (var f in files)
        {
            using var source = ModelFiles.OpenRead(f, sourceFolder, policy);
            using var target = new FileStream(Path.Combine(destinationFolder, Path.GetFileName(f)), FileMode.CreateNew, FileAccess.Write);
            long offset = 0;
            for (int n; (n = RandomAccess.Read(source.Handle, buffer, offset)) > 0;)
            {
                offset += n;
                if (offset > MaxCopyBytes)
                    throw new CheckpointFormatException(f, $"grew past {MaxCopyBytes} bytes while being copied");
                target.Write(buffer, 0, n);
            }
        }
    }
}
