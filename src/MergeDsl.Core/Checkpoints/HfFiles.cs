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

    /// <summary>The files of <paramref name="folder"/> (top level only) that <see cref="IsCopiedThrough"/> accepts.</summary>
    public static IReadOnlyList<string> CopyThroughFiles(string folder) =>
        Directory.EnumerateFiles(folder)
            .Where(f => IsCopiedThrough(f) && new FileInfo(f).Length <= MaxCopyBytes)
            .Order(StringComparer.Ordinal)
            .ToList();
}
