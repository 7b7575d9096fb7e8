using System.Text.Json;
using MergeDsl.Core.Models;

namespace MergeDsl.Core.TaskPool;

/// <summary>
/// Shape of the task pool's tiny CLIP vision tower. It runs on the core runtime (<see cref="ClipVisionModel"/>);
/// this record stays because its JSON is part of <see cref="ZooSettings.Hash"/>, which names the zoo cache.
/// </summary>
public sealed record TinyClipConfig(
    int ImageSize = 28, int PatchSize = 7, int Channels = 1, int Hidden = 64, int Layers = 4, int Heads = 4,
    int Intermediate = 256, int ProjectionDim = 64, double LayerNormEps = 1e-5)
{
    /// <summary>Patches plus the class token.</summary>
    public int Tokens => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;

    /// <summary>The core runtime's configuration of this shape (quick_gelu, as CLIP).</summary>
    public ClipVisionConfig ToClipVisionConfig() => new ClipVisionConfig
    {
        HiddenSize = Hidden, IntermediateSize = Intermediate, NumHiddenLayers = Layers, NumAttentionHeads = Heads,
        ImageSize = ImageSize, PatchSize = PatchSize, NumChannels = Channels, HiddenAct = "quick_gelu",
        LayerNormEps = LayerNormEps, ProjectionDim = ProjectionDim,
    }.Validate();

    /// <summary>
    /// Stored U8 images are scaled to [0, 1] and mapped to [-1, 1] (<see cref="TaskTensors.ToInput"/>). A method,
    /// not a property: properties enter the zoo hash.
    /// </summary>
    public ImagePreprocess ToPreprocess() => ImagePreprocess.Symmetric(Channels);

    /// <summary>The zoo folders' <c>config.json</c>: the core config plus the preprocessing section.</summary>
    public string ToHfConfigJson()
    {
        var o = ToClipVisionConfig().ToJsonObject();
        o["mergedsl_preprocess"] = ClipModelFolder.PreprocessJson(ToPreprocess());
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
