using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

/// <summary>A model folder loaded for evaluation or adaptation: plain CLIP or upscaled MoE, with heads.</summary>
public sealed class ModelBundle : IDisposable
{
    /// <summary>The encoder.</summary>
    public required ClipVisionModel Model { get; init; }
    /// <summary>The MoE view of <see cref="Model"/>, or null for a plain model.</summary>
    public MoeModel? Moe { get; init; }
    /// <summary>Task heads by task name.</summary>
    public required IReadOnlyDictionary<string, ClassificationHead> Heads { get; init; }
    /// <summary>Preprocessing for u8 images, or null (symmetric [-1, 1]).</summary>
    public ImagePreprocess? Preprocess { get; init; }
    /// <summary>Where it was loaded from (or a label).</summary>
    public required string Source { get; init; }

    /// <summary>Moves model and heads to a device.</summary>
    public ModelBundle To(Device device)
    {
        Model.to(device);
        foreach (var h in Heads.Values) h.to(device);
        return this;
    }

    /// <summary>Writes the bundle as a model folder (with its <c>mergedsl_moe</c> section when MoE); see
    /// <see cref="ClipModelFolder.Save"/> for <paramref name="output"/> and <paramref name="extraFiles"/>.</summary>
    public void Save(string folder, bool overwrite = false, IReadOnlyDictionary<string, string>? metadata = null,
        OutputFolder? output = null, IReadOnlyDictionary<string, string>? extraFiles = null)
        => MoeModelFolder.Save(folder, Model, Moe, Heads, Preprocess, overwrite, metadata, output, extraFiles);

    /// <inheritdoc/>
    public void Dispose()
    {
        Model.Dispose();
        foreach (var h in Heads.Values) h.Dispose();
    }
}

/// <summary>Saves and loads upscaled models: a CLIP model folder whose config.json has a <c>mergedsl_moe</c> section.</summary>
public static class MoeModelFolder
{
    /// <summary>Name of the config.json section describing the MoE modules.</summary>
    public const string ConfigSection = "mergedsl_moe";

    /// <summary>Writes a model folder atomically (see <see cref="ClipModelFolder.Save"/>).</summary>
    public static void Save(string folder, ClipVisionModel model, MoeModel? moe, IReadOnlyDictionary<string, ClassificationHead> heads,
        ImagePreprocess? preprocess = null, bool overwrite = false, IReadOnlyDictionary<string, string>? metadata = null,
        OutputFolder? output = null, IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var extra = moe is null ? null : new Dictionary<string, JsonNode> { [ConfigSection] = moe.Spec.ToJson(moe.NumExperts) };
        ClipModelFolder.Save(folder, model, heads, extra, preprocess, overwrite, metadata, output, extraFiles);
    }

    /// <summary>Loads a model folder (plain or MoE) with its heads, on the CPU.</summary>
    public static ModelBundle Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such model folder");
        var json = ClipModelFolder.ReadConfigJson(folder);
        string cfgFile = Path.Combine(folder, "config.json");
        var cfg = ClipVisionConfig.FromJson(json.ToJsonString(), cfgFile);
        MoeModel? moe = null;
        ClipVisionModel model;
        if (json[ConfigSection] is JsonObject section)
        {
            var (spec, n) = UpscaleSpec.FromJson(section, cfgFile);
            moe = MoeModelBuilder.Build(cfg, spec, n);
            model = moe.Model;
        }
        else model = new ClipVisionModel(cfg);
        try
        {
            using (var ck = Checkpoint.Open(folder)) ClipModelFolder.LoadWeights(model, ck);
            return new ModelBundle
            {
                Model = model,
                Moe = moe,
                Heads = ClipModelFolder.LoadHeads(folder),
                Preprocess = ClipModelFolder.ReadPreprocess(json),
                Source = folder,
            };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
