using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Core.Models;

namespace MergeDsl.Bench.TaskPool;

/// <summary>Which parameters fine-tuning may move (everything else stays at the pretrained values).</summary>
public enum FineTuneScope
{
    /// <summary>Only the transformer blocks' MLPs (fc1/fc2): task knowledge lands where WEMoE upscales.</summary>
    Mlp,
    /// <summary>MLPs and attention projections; embeddings, LayerNorms and projection stay frozen.</summary>
    MlpAndAttention,
}

/// <summary>
/// Everything that determines the model zoo; its hash names the zoo's cache folder, so a second run with the
/// same settings reuses the trained models.
/// </summary>
public sealed record ZooSettings
{
    /// <summary>Seed of initialisation and batch sampling.</summary>
    public int Seed { get; init; } = 42;
    /// <summary>
    /// The tiny CLIP vision tower the zoo trains: 28×28×1 input, patch 7 (16 patches + class token), width 64,
    /// 4 layers, 4 heads, MLP 256 (4× wide, as CLIP), projection 64, quick-GELU.
    /// </summary>
    public static ClipVisionConfig TinyClip => new()
    {
        HiddenSize = 64, IntermediateSize = 256, NumHiddenLayers = 4, NumAttentionHeads = 4,
        ImageSize = 28, PatchSize = 7, NumChannels = 1, HiddenAct = "quick_gelu", LayerNormEps = 1e-5, ProjectionDim = 64,
    };

    /// <summary>Model shape (default <see cref="TinyClip"/>).</summary>
    public ClipVisionConfig Model { get; init; } = TinyClip;
    /// <summary>Generic pretraining steps (supervised, raw digits + raw Fashion: 20 classes).</summary>
    public int PretrainSteps { get; init; } = 1500;
    /// <summary>Pretraining batch size.</summary>
    public int PretrainBatch { get; init; } = 128;
    /// <summary>Peak pretraining learning rate (AdamW, warm-up then cosine).</summary>
    public double PretrainLr { get; init; } = 2e-3;
    /// <summary>Raw Fashion-MNIST training images used in pretraining (all raw digits are used).</summary>
    public int PretrainFashionImages { get; init; } = 16000;
    /// <summary>Training images per task (heads and fine-tuning).</summary>
    public int TaskTrainImages { get; init; } = 8000;
    /// <summary>Full-batch steps of head fitting on frozen pretrained features.</summary>
    public int HeadSteps { get; init; } = 300;
    /// <summary>Fine-tuning steps per expert.</summary>
    public int FineTuneSteps { get; init; } = 500;
    /// <summary>Fine-tuning batch size.</summary>
    public int FineTuneBatch { get; init; } = 64;
    /// <summary>Fine-tuning learning rate (Adam, constant after a short warm-up).</summary>
    public double FineTuneLr { get; init; } = 1e-3;
    /// <summary>What fine-tuning moves.</summary>
    public FineTuneScope Scope { get; init; } = FineTuneScope.Mlp;

    /// <summary>
    /// Stored U8 images are scaled to [0, 1] and mapped to [-1, 1]. A method, not a property: properties enter
    /// the hash.
    /// </summary>
    public ImagePreprocess Preprocess() => ImagePreprocess.Symmetric(Model.NumChannels);

    /// <summary>The zoo folders' <c>config.json</c>: the model config plus the preprocessing section.</summary>
    public string ModelConfigJson()
    {
        var o = Model.Validate().ToJsonObject();
        o["mergedsl_preprocess"] = ClipModelFolder.PreprocessJson(Preprocess());
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// Short stable hash of the settings and of the task pool the zoo is trained on (names the cache folder):
    /// a changed task (name, source, transforms, label map) must not reuse experts trained for the old one.
    /// </summary>
    public string Hash(IEnumerable<TaskSpec> tasks)
    {
        var pool = tasks.Select(t => new { t.Name, Source = t.Source.ToString(), Transforms = t.Transforms.Select(x => x.ToString()), t.LabelMap });
        var json = JsonSerializer.Serialize(this) + JsonSerializer.Serialize(pool);
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..12].ToLowerInvariant();
    }
}
