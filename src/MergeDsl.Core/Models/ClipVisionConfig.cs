using System.Text.Json;
using System.Text.Json.Nodes;

namespace MergeDsl.Core.Models;

/// <summary>
/// The vision half of a Hugging Face <c>CLIPConfig</c>: the fields of <c>vision_config</c> plus the
/// top-level <c>projection_dim</c>. Any size works; openai/clip-vit-base-patch32 is
/// 768/3072/12/12/224/32/3/quick_gelu/1e-5/512.
/// </summary>
public sealed record ClipVisionConfig
{
    /// <summary>Width of the residual stream (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>MLP width (<c>intermediate_size</c>).</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>Number of encoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>Attention heads (<c>num_attention_heads</c>); must divide <see cref="HiddenSize"/>.</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary>Input side length in pixels (<c>image_size</c>).</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>Patch side length (<c>patch_size</c>); must divide <see cref="ImageSize"/>.</summary>
    public int PatchSize { get; init; } = 32;
    /// <summary>Input channels (<c>num_channels</c>).</summary>
    public int NumChannels { get; init; } = 3;
    /// <summary><c>quick_gelu</c> (CLIP) or <c>gelu</c> (exact, erf-based).</summary>
    public string HiddenAct { get; init; } = "quick_gelu";
    /// <summary>LayerNorm epsilon (<c>layer_norm_eps</c>).</summary>
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>Size of the image embedding (<c>projection_dim</c>, top level in CLIPConfig).</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>Patches per image plus the class token.</summary>
    public int NumPositions => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;

    /// <summary>Per-head width.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent field.</summary>
    public ClipVisionConfig Validate()
    {
        void Positive(string name, int v) { if (v <= 0) throw new ArgumentException($"CLIP config: {name} must be positive, got {v}"); }
        Positive("hidden_size", HiddenSize); Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers); Positive("num_attention_heads", NumAttentionHeads);
        Positive("image_size", ImageSize); Positive("patch_size", PatchSize);
        Positive("num_channels", NumChannels); Positive("projection_dim", ProjectionDim);
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"CLIP config: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
        if (ImageSize % PatchSize != 0)
            throw new ArgumentException($"CLIP config: image_size {ImageSize} is not divisible by patch_size {PatchSize}");
        Activations.Get(HiddenAct);
        return this;
    }

    /// <summary>
    /// Reads a config.json: a full <c>CLIPConfig</c> (uses <c>vision_config</c> and top-level
    /// <c>projection_dim</c>) or a bare <c>CLIPVisionConfig</c>. Missing fields take the ViT-B/32 defaults,
    /// as in transformers.
    /// </summary>
    public static ClipVisionConfig FromJson(string json, string label = "config.json")
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException e) { throw new FormatException($"{label}: not valid JSON ({e.Message})"); }
        if (root is not JsonObject obj) throw new FormatException($"{label}: expected a JSON object");
        var vision = obj["vision_config"] as JsonObject ?? obj;
        int Int(string name, int dflt, JsonObject? o = null)
        {
            var n = (o ?? vision)[name];
            if (n is null) return dflt;
            try { return n.GetValue<int>(); }
            catch (Exception) { throw new FormatException($"{label}: {name} must be an integer, got {n.ToJsonString()}"); }
        }
        var d = new ClipVisionConfig();
        int proj = obj["projection_dim"] is not null ? Int("projection_dim", d.ProjectionDim, obj) : Int("projection_dim", d.ProjectionDim);
        double eps = vision["layer_norm_eps"] is JsonNode e2 ? e2.GetValue<double>() : d.LayerNormEps;
        var cfg = new ClipVisionConfig
        {
            HiddenSize = Int("hidden_size", d.HiddenSize),
            IntermediateSize = Int("intermediate_size", d.IntermediateSize),
            NumHiddenLayers = Int("num_hidden_layers", d.NumHiddenLayers),
            NumAttentionHeads = Int("num_attention_heads", d.NumAttentionHeads),
            ImageSize = Int("image_size", d.ImageSize),
            PatchSize = Int("patch_size", d.PatchSize),
            NumChannels = Int("num_channels", d.NumChannels),
            HiddenAct = vision["hidden_act"]?.GetValue<string>() ?? d.HiddenAct,
            LayerNormEps = eps,
            ProjectionDim = proj,
        };
        try { return cfg.Validate(); }
        catch (ArgumentException ex) { throw new FormatException($"{label}: {ex.Message}"); }
    }

    /// <summary>Reads <paramref name="path"/> (a config.json file or a folder holding one).</summary>
    public static ClipVisionConfig Load(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        if (Checkpoints.UnixFiles.TryStat(file, followLinks: false) is null) throw new FileNotFoundException($"{file}: CLIP config.json not found");
        return FromJson(Checkpoints.ModelFiles.ReadText(file), file);
    }

    /// <summary>A CLIPConfig-shaped JSON object (<c>vision_config</c> + <c>projection_dim</c>) that transformers reads.</summary>
    public JsonObject ToJsonObject() => new()
    {
        ["architectures"] = new JsonArray("CLIPVisionModelWithProjection"),
        ["model_type"] = "clip_vision_model",
        ["projection_dim"] = ProjectionDim,
        ["hidden_size"] = HiddenSize,
        ["intermediate_size"] = IntermediateSize,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["image_size"] = ImageSize,
        ["patch_size"] = PatchSize,
        ["num_channels"] = NumChannels,
        ["hidden_act"] = HiddenAct,
        ["layer_norm_eps"] = LayerNormEps,
        ["vision_config"] = new JsonObject
        {
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["image_size"] = ImageSize,
            ["patch_size"] = PatchSize,
            ["num_channels"] = NumChannels,
            ["hidden_act"] = HiddenAct,
            ["layer_norm_eps"] = LayerNormEps,
            ["projection_dim"] = ProjectionDim,
        },
    };

    /// <summary>Indented JSON of <see cref="ToJsonObject"/>.</summary>
    public string ToJson() => ToJsonObject().ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
