using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder.Tokenizers;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// A Hugging Face decoder folder: <c>config.json</c>, <c>model.safetensors</c> (or shards with an index), and
/// a tokenizer (see <see cref="TokenizerFiles"/>). Everything is read through <see cref="Checkpoint.Open(string, bool, InputFilePolicy?)"/>
/// and <see cref="ModelFiles"/>; writing goes through <see cref="CheckpointWriter"/> (temporary folder, atomic commit).
/// </summary>
public static class DecoderModelFolder
{
    /// <summary>The config file name.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Reads the configuration and weights of <paramref name="folder"/> into a float32 model.</summary>
    /// <exception cref="FormatException">config.json is unusable (the message names it).</exception>
    /// <exception cref="ModelWeightsException">Missing or mis-shaped tensors.</exception>
    /// <remarks>An upscaled decoder (<see cref="Moe.DecoderMoeFolder"/>) loads with its MoE MLPs, so scoring and
    /// generation run on it as on any decoder.</remarks>
    public static DecoderModel Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such model folder");
        if (UnixFiles.TryStat(Path.Combine(folder, ConfigFile), followLinks: false) is not null && Moe.DecoderMoeFolder.IsDecoderMoe(folder))
            return Moe.DecoderMoeFolder.Load(folder).Model;
        var cfg = DecoderConfig.Load(folder);
        var model = new DecoderModel(cfg, Path.Combine(folder, ConfigFile));
        try
        {
            using var ck = Checkpoint.Open(folder);
            model.LoadWeights(ck.Tensors.Select(t => t.Name), n => ck.TryGetInfo(n, out var info) ? info.Shape : null, ck.Load, ck.Label);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The model and its tokenizer.</summary>
    public static (DecoderModel Model, ITextTokenizer Tokenizer) LoadWithTokenizer(string folder)
    {
        var model = Load(folder);
        try
        {
            var tokenizer = TokenizerFiles.Load(folder, model.Config);
            return (model, tokenizer);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a Hugging Face folder (config.json, model.safetensors in float32) with
    /// <paramref name="extraFiles"/> (e.g. tokenizer.json) beside it, atomically.
    /// </summary>
    public static void Save(string folder, DecoderModel model, IReadOnlyDictionary<string, string>? extraFiles = null,
        bool overwrite = false, long maxShardBytes = 5_000_000_000)
    {
        var files = new Dictionary<string, string>(extraFiles ?? new Dictionary<string, string>()) { [ConfigFile] = model.Config.ToJson() };
        Write(folder, model, files, null, overwrite, null, null, maxShardBytes);
    }

    /// <summary>
    /// Writes the parameters of <paramref name="model"/> (float32) and <paramref name="files"/> (which must include
    /// config.json) atomically, with the small files of <paramref name="copyFilesFrom"/> (tokenizer, generation
    /// config; <paramref name="files"/> win over them). <paramref name="output"/>: the caller's reservation, else one is taken.
    /// </summary>
    public static void Write(string folder, DecoderModel model, IReadOnlyDictionary<string, string> files, string? copyFilesFrom = null,
        bool overwrite = false, IReadOnlyDictionary<string, string>? metadata = null, OutputFolder? output = null,
        long maxShardBytes = 5_000_000_000)
    {
        if (!files.ContainsKey(ConfigFile)) throw new ArgumentException($"writing {folder}: no {ConfigFile} among the files");
        var state = model.StateTensors();
        try
        {
            var layout = state.Select(kv => (kv.Key, DTypes.FromTorch(kv.Value.dtype), kv.Value.shape)).ToList();
            using var writer = CheckpointWriter.Create(folder, layout, new CheckpointWriterOptions
            {
                Overwrite = overwrite,
                Output = output,
                CopyFilesFrom = copyFilesFrom,
                Metadata = metadata ?? new Dictionary<string, string>(),
                ExtraFiles = files,
                MaxShardBytes = maxShardBytes,
            });
            foreach (var (name, t) in state) writer.Write(name, t);
            writer.Commit();
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>The files of a <see cref="ByteTokenizer"/> (tokenizer.json, tokenizer_config.json) for <see cref="Save"/>.</summary>
    public static IReadOnlyDictionary<string, string> ByteTokenizerFiles() => new Dictionary<string, string>
    {
        [TokenizerFiles.TokenizerJson] = ByteTokenizer.ToTokenizerJson(),
        [TokenizerFiles.TokenizerConfigJson] = ByteTokenizer.ToTokenizerConfigJson(),
    };

    /// <summary>A model with every weight drawn from N(0, <paramref name="std"/>²) (norms 1) under <paramref name="seed"/>, for tests and benchmarks.</summary>
    public static DecoderModel Random(DecoderConfig config, long seed, double std = 0.02, string label = "random decoder")
    {
        var model = new DecoderModel(config, label);
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            var noise = TorchSharp.torch.randn(p.shape, generator: gen);
            // Norm scales near 1 but not equal to it, so a test would notice a norm weight left unused.
            p.copy_(name.EndsWith("norm.weight", StringComparison.Ordinal) ? noise.Times(0.1).Plus(1.0) : noise.Times(std));
        }
        return model;
    }
}
