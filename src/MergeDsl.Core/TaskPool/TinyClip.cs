using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Shape of the task pool's tiny CLIP vision tower (Hugging Face CLIPVisionConfig fields).</summary>
public sealed record TinyClipConfig(
    int ImageSize = 28, int PatchSize = 7, int Channels = 1, int Hidden = 64, int Layers = 4, int Heads = 4,
    int Intermediate = 256, int ProjectionDim = 64, double LayerNormEps = 1e-5)
{
    /// <summary>Patches plus the class token.</summary>
    public int Tokens => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;

    /// <summary>A Hugging Face <c>config.json</c> for <c>CLIPVisionModelWithProjection</c>.</summary>
    public string ToHfConfigJson() => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["architectures"] = new[] { "CLIPVisionModelWithProjection" },
        ["model_type"] = "clip_vision_model",
        ["hidden_size"] = Hidden, ["intermediate_size"] = Intermediate, ["num_hidden_layers"] = Layers,
        ["num_attention_heads"] = Heads, ["image_size"] = ImageSize, ["patch_size"] = PatchSize,
        ["num_channels"] = Channels, ["projection_dim"] = ProjectionDim, ["hidden_act"] = "quick_gelu",
        ["layer_norm_eps"] = LayerNormEps,
        // Stored U8 images are scaled to [0, 1] and mapped to [-1, 1] (TaskTensors.ToInput).
        ["mergedsl_preprocess"] = new Dictionary<string, float[]> { ["mean"] = [0.5f], ["std"] = [0.5f] },
    }, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>Replaces the MLP of layer <paramref name="layer"/>: gets the LayerNorm'd input [B, T, D], returns [B, T, D].</summary>
public delegate Tensor MlpOverride(int layer, Tensor x);

/// <summary>
/// A functional CLIP vision transformer over a parameter map with Hugging Face names
/// (<c>vision_model.encoder.layers.{i}.mlp.fc1.weight</c>, ...), so that merged and upscaled parameter maps
/// run without building modules. Images are [B, C, H, W] floats, normalised to [-1, 1].
/// </summary>
public static class TinyClip
{
    /// <summary>Prefix of the encoder layers.</summary>
    public const string LayerPrefix = "vision_model.encoder.layers.";

    /// <summary>Name of a layer's parameter, e.g. <c>Layer(2, "mlp.fc1.weight")</c>.</summary>
    public static string Layer(int i, string rest) => $"{LayerPrefix}{i}.{rest}";

    /// <summary>True for parameters of a transformer block's MLP (fc1/fc2).</summary>
    public static bool IsMlp(string name) => name.StartsWith(LayerPrefix, StringComparison.Ordinal) && name.Contains(".mlp.");

    /// <summary>The layer index of an encoder-layer parameter, or -1.</summary>
    public static int LayerOf(string name)
    {
        if (!name.StartsWith(LayerPrefix, StringComparison.Ordinal)) return -1;
        var rest = name[LayerPrefix.Length..];
        return int.Parse(rest[..rest.IndexOf('.')]);
    }

    /// <summary>Parameter names and shapes, in a fixed order.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Layout(TinyClipConfig c)
    {
        var l = new List<(string, long[])>
        {
            ("vision_model.embeddings.class_embedding", [c.Hidden]),
            ("vision_model.embeddings.patch_embedding.weight", [c.Hidden, c.Channels, c.PatchSize, c.PatchSize]),
            ("vision_model.embeddings.position_embedding.weight", [c.Tokens, c.Hidden]),
            ("vision_model.pre_layrnorm.weight", [c.Hidden]), ("vision_model.pre_layrnorm.bias", [c.Hidden]),
        };
        for (int i = 0; i < c.Layers; i++)
        {
            foreach (var p in new[] { "q_proj", "k_proj", "v_proj", "out_proj" })
            {
                l.Add((Layer(i, $"self_attn.{p}.weight"), [c.Hidden, c.Hidden]));
                l.Add((Layer(i, $"self_attn.{p}.bias"), [c.Hidden]));
            }
            l.Add((Layer(i, "layer_norm1.weight"), [c.Hidden])); l.Add((Layer(i, "layer_norm1.bias"), [c.Hidden]));
            l.Add((Layer(i, "mlp.fc1.weight"), [c.Intermediate, c.Hidden])); l.Add((Layer(i, "mlp.fc1.bias"), [c.Intermediate]));
            l.Add((Layer(i, "mlp.fc2.weight"), [c.Hidden, c.Intermediate])); l.Add((Layer(i, "mlp.fc2.bias"), [c.Hidden]));
            l.Add((Layer(i, "layer_norm2.weight"), [c.Hidden])); l.Add((Layer(i, "layer_norm2.bias"), [c.Hidden]));
        }
        l.Add(("vision_model.post_layernorm.weight", [c.Hidden])); l.Add(("vision_model.post_layernorm.bias", [c.Hidden]));
        l.Add(("visual_projection.weight", [c.ProjectionDim, c.Hidden]));
        return l;
    }

    /// <summary>Fresh parameters (CLIP's init: N(0, 0.02) weights, zero biases, unit LayerNorms) from a seeded generator.</summary>
    public static Dictionary<string, Tensor> Init(TinyClipConfig c, Generator gen)
    {
        var p = new Dictionary<string, Tensor>();
        foreach (var (name, shape) in Layout(c))
        {
            Tensor t;
            if (name.EndsWith(".bias")) t = zeros(shape);
            else if (name.Contains("layernorm") || name.Contains("layer_norm") || name.Contains("layrnorm")) t = ones(shape);
            else t = normal(0.0, 0.02, shape, generator: gen);
            p[name] = t;
        }
        return p;
    }

    static Tensor Linear(IReadOnlyDictionary<string, Tensor> p, string prefix, Tensor x, bool bias = true) =>
        nn.functional.linear(x, p[prefix + ".weight"], bias ? p[prefix + ".bias"] : null);

    static Tensor LayerNorm(IReadOnlyDictionary<string, Tensor> p, string prefix, Tensor x, double eps) =>
        nn.functional.layer_norm(x, [x.shape[^1]], p[prefix + ".weight"], p[prefix + ".bias"], eps);

    /// <summary>CLIP's activation: x · sigmoid(1.702 x).</summary>
    public static Tensor QuickGelu(Tensor x) => x * sigmoid(1.702 * x);

    /// <summary>The plain MLP of layer <paramref name="i"/>.</summary>
    public static Tensor Mlp(IReadOnlyDictionary<string, Tensor> p, int i, Tensor x) =>
        Linear(p, Layer(i, "mlp.fc2"), QuickGelu(Linear(p, Layer(i, "mlp.fc1"), x)));

    /// <summary>Image embeddings [B, ProjectionDim] (CLIPVisionModelWithProjection's <c>image_embeds</c>).</summary>
    public static Tensor Encode(TinyClipConfig c, IReadOnlyDictionary<string, Tensor> p, Tensor images, MlpOverride? mlp = null)
    {
        long b = images.shape[0];
        var patches = nn.functional.conv2d(images, p["vision_model.embeddings.patch_embedding.weight"], strides: new long[] { c.PatchSize, c.PatchSize });
        var x = patches.flatten(2).transpose(1, 2);                          // [B, P, D]
        var cls = p["vision_model.embeddings.class_embedding"].expand(b, 1, c.Hidden);
        x = cat([cls, x], 1) + p["vision_model.embeddings.position_embedding.weight"];
        x = LayerNorm(p, "vision_model.pre_layrnorm", x, c.LayerNormEps);
        long t = x.shape[1];
        int hd = c.Hidden / c.Heads;
        double scale = 1.0 / Math.Sqrt(hd);
        for (int i = 0; i < c.Layers; i++)
        {
            var h = LayerNorm(p, Layer(i, "layer_norm1"), x, c.LayerNormEps);
            var q = Linear(p, Layer(i, "self_attn.q_proj"), h).view(b, t, c.Heads, hd).transpose(1, 2);
            var k = Linear(p, Layer(i, "self_attn.k_proj"), h).view(b, t, c.Heads, hd).transpose(1, 2);
            var v = Linear(p, Layer(i, "self_attn.v_proj"), h).view(b, t, c.Heads, hd).transpose(1, 2);
            var att = softmax(matmul(q * scale, k.transpose(-2, -1)), -1);
            var o = matmul(att, v).transpose(1, 2).reshape(b, t, c.Hidden);
            x = x + Linear(p, Layer(i, "self_attn.out_proj"), o);
            h = LayerNorm(p, Layer(i, "layer_norm2"), x, c.LayerNormEps);
            x = x + (mlp is null ? Mlp(p, i, h) : mlp(i, h));
        }
        var pooled = LayerNorm(p, "vision_model.post_layernorm", x.select(1, 0), c.LayerNormEps);
        return nn.functional.linear(pooled, p["visual_projection.weight"]);
    }

    /// <summary>
    /// Logits of a CLIP-style task head over image embeddings: <c>logit_scale</c> · (e / ‖e‖) · <c>weight</c>ᵀ
    /// (<c>weight</c> [C, ProjectionDim], <c>logit_scale</c> []), the layout of <c>heads/&lt;task&gt;.safetensors</c>.
    /// </summary>
    public static Tensor Head(IReadOnlyDictionary<string, Tensor> head, Tensor embeds) =>
        nn.functional.normalize(embeds, p: 2, dim: -1).matmul(head["weight"].t()) * head["logit_scale"];
}
