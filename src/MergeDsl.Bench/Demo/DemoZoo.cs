using System.Text.Json;
using MergeDsl.Core.Checkpoints;
using TorchSharp;

namespace MergeDsl.Bench.Demo;

/// <summary>Sizes of the demo's tiny CLIP-ViT-like vision model.</summary>
/// <param name="Hidden">Width of the residual stream.</param>
/// <param name="Intermediate">Width of each MLP's hidden layer.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="Heads">Attention heads (recorded in config.json).</param>
/// <param name="ImageSize">Input side in pixels.</param>
/// <param name="PatchSize">Patch side in pixels.</param>
/// <param name="Channels">Input channels.</param>
/// <param name="ProjectionDim">Width of the visual projection.</param>
/// <param name="Experts">Fine-tuned experts derived from the base.</param>
/// <param name="Seed">Seed of every random draw.</param>
/// <param name="ExpertScale">Standard deviation of the experts' perturbations.</param>
public sealed record DemoZooConfig(
    int Hidden = 32, int Intermediate = 64, int Layers = 2, int Heads = 4, int ImageSize = 16, int PatchSize = 4,
    int Channels = 3, int ProjectionDim = 16, int Experts = 3, ulong Seed = 20240611, float ExpertScale = 0.01f)
{
    /// <summary>Patches per image plus the class token.</summary>
    public int Positions => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;
}

/// <summary>One model of the zoo on disk.</summary>
/// <param name="Name">"base", "expert_1", ...</param>
/// <param name="Folder">Its Hugging Face folder (config.json + safetensors).</param>
/// <param name="Sharded">True when written as several shards with an index.</param>
/// <param name="Reused">True when an identical copy was already on disk.</param>
public sealed record DemoModel(string Name, string Folder, bool Sharded, bool Reused);

/// <summary>
/// A small deterministic model zoo for demos and tests: a base model with CLIP vision-tower parameter
/// names (Hugging Face layout) and experts that are the base plus small seeded perturbations, as if each
/// had been fine-tuned on its own task. Same config, same bytes, every run (own PRNG, not torch's).
/// </summary>
public static class DemoZoo
{
    /// <summary>The name of expert <paramref name="i"/> (1-based).</summary>
    public static string ExpertName(int i) => $"expert_{i}";

    /// <summary>Every parameter's name and shape, in the order Hugging Face lists a CLIP vision tower.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Layout(DemoZooConfig c)
    {
        long h = c.Hidden, m = c.Intermediate;
        var l = new List<(string, long[])>
        {
            ("vision_model.embeddings.class_embedding", [h]),
            ("vision_model.embeddings.patch_embedding.weight", [h, c.Channels, c.PatchSize, c.PatchSize]),
            ("vision_model.embeddings.position_embedding.weight", [c.Positions, h]),
            ("vision_model.pre_layrnorm.weight", [h]),
            ("vision_model.pre_layrnorm.bias", [h]),
        };
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"vision_model.encoder.layers.{i}.";
            foreach (var proj in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
            {
                l.Add((p + $"self_attn.{proj}.weight", [h, h]));
                l.Add((p + $"self_attn.{proj}.bias", [h]));
            }
            l.Add((p + "layer_norm1.weight", [h]));
            l.Add((p + "layer_norm1.bias", [h]));
            l.Add((p + "mlp.fc1.weight", [m, h]));
            l.Add((p + "mlp.fc1.bias", [m]));
            l.Add((p + "mlp.fc2.weight", [h, m]));
            l.Add((p + "mlp.fc2.bias", [h]));
            l.Add((p + "layer_norm2.weight", [h]));
            l.Add((p + "layer_norm2.bias", [h]));
        }
        l.Add(("vision_model.post_layernorm.weight", [h]));
        l.Add(("vision_model.post_layernorm.bias", [h]));
        l.Add(("visual_projection.weight", [c.ProjectionDim, h]));
        return l;
    }

    /// <summary>The base model's values: layer norms at (1, 0), other weights N(0, 0.02²), biases N(0, 0.01²).</summary>
    public static Dictionary<string, float[]> BaseValues(DemoZooConfig c)
    {
        var rng = new SplitMix(c.Seed);
        var values = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in Layout(c))
        {
            var v = new float[shape.Aggregate(1L, (a, d) => a * d)];
            bool norm = name.Contains("layernorm", StringComparison.Ordinal) || name.Contains("layer_norm", StringComparison.Ordinal)
                || name.Contains("layrnorm", StringComparison.Ordinal);
            if (norm) Array.Fill(v, name.EndsWith(".weight", StringComparison.Ordinal) ? 1f : 0f);
            else
            {
                float std = name.EndsWith(".bias", StringComparison.Ordinal) ? 0.01f : 0.02f;
                for (int k = 0; k < v.Length; k++) v[k] = std * rng.NextGaussian();
            }
            values[name] = v;
        }
        return values;
    }

    /// <summary>Expert <paramref name="i"/> (1-based): the base plus N(0, ExpertScale²) noise from its own seed.</summary>
    public static Dictionary<string, float[]> ExpertValues(DemoZooConfig c, int i)
    {
        var rng = new SplitMix(c.Seed ^ (0x9E3779B97F4A7C15UL * (ulong)i));
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, v) in BaseValues(c))
        {
            var e = new float[v.Length];
            for (int k = 0; k < v.Length; k++) e[k] = v[k] + c.ExpertScale * rng.NextGaussian();
            result[name] = e;
        }
        return result;
    }

    /// <summary>A Hugging Face CLIPVisionConfig for <paramref name="c"/>.</summary>
    public static string ConfigJson(DemoZooConfig c) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["architectures"] = new[] { "CLIPVisionModelWithProjection" },
        ["model_type"] = "clip_vision_model",
        ["hidden_size"] = c.Hidden,
        ["intermediate_size"] = c.Intermediate,
        ["num_hidden_layers"] = c.Layers,
        ["num_attention_heads"] = c.Heads,
        ["image_size"] = c.ImageSize,
        ["patch_size"] = c.PatchSize,
        ["num_channels"] = c.Channels,
        ["projection_dim"] = c.ProjectionDim,
        ["hidden_act"] = "quick_gelu",
        ["layer_norm_eps"] = 1e-5,
        ["torch_dtype"] = "float32",
    }, new JsonSerializerOptions { WriteIndented = true }) + "\n";

    /// <summary>
    /// Writes base and experts under <paramref name="folder"/> (base/, expert_1/, ...); the last expert is
    /// sharded at <paramref name="lastExpertShardBytes"/> to exercise sharded checkpoints. Models already
    /// on disk with identical bytes are reused; others are replaced.
    /// </summary>
    public static IReadOnlyList<DemoModel> Build(string folder, DemoZooConfig? config = null, long lastExpertShardBytes = 32_000)
    {
        var c = config ?? new DemoZooConfig();
        Directory.CreateDirectory(folder);
        var models = new List<DemoModel>();
        string configJson = ConfigJson(c);
        for (int i = 0; i <= c.Experts; i++)
        {
            string name = i == 0 ? "base" : ExpertName(i);
            var values = i == 0 ? BaseValues(c) : ExpertValues(c, i);
            bool sharded = i == c.Experts && i > 0;
            long shardBytes = sharded ? lastExpertShardBytes : long.MaxValue;
            string target = Path.Combine(folder, name);
            bool reused = Matches(target, configJson, values, c, shardBytes);
            if (!reused) Write(target, configJson, values, c, shardBytes);
            models.Add(new DemoModel(name, target, sharded, reused));
        }
        return models;
    }

    static void Write(string target, string configJson, Dictionary<string, float[]> values, DemoZooConfig c, long shardBytes)
    {
        // config.json travels through the writer's copy-through, so the folder appears complete or not at all.
        string staging = Path.Combine(Path.GetTempPath(), $"mergedsl-demo-config-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            File.WriteAllText(Path.Combine(staging, "config.json"), configJson);
            var layout = Layout(c).Select(l => (l.Name, DType.F32, l.Shape)).ToList();
            var options = new CheckpointWriterOptions
            {
                MaxShardBytes = shardBytes,
                Overwrite = true,
                CopyFilesFrom = staging,
                Metadata = new Dictionary<string, string> { ["mergedsl.demo"] = "CLIP-ViT-like demo zoo" },
            };
            using var scope = torch.NewDisposeScope();
            using var w = CheckpointWriter.Create(target, layout, options);
            foreach (var (name, shape) in Layout(c))
                w.Write(name, torch.tensor(values[name]).reshape(shape));
            w.Commit();
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
    }

    static bool Matches(string target, string configJson, Dictionary<string, float[]> values, DemoZooConfig c, long shardBytes)
    {
        string config = Path.Combine(target, "config.json");
        if (!File.Exists(config) || File.ReadAllText(config) != configJson) return false;
        try
        {
            using var cp = Checkpoint.Open(target);
            if (cp.Shards.Count != ShardCount(c, shardBytes)) return false;
            if (cp.Tensors.Count != values.Count) return false;
            foreach (var (name, v) in values)
            {
                if (!cp.TryGetInfo(name, out var info) || info.DType != DType.F32) return false;
                if (!cp.RawBytes(name).SequenceEqual(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()))) return false;
            }
            return true;
        }
        catch (Exception e) when (e is CheckpointFormatException or IOException)
        {
            return false;
        }
    }

    /// <summary>How many shards the writer's greedy plan makes of the F32 model at <paramref name="shardBytes"/>.</summary>
    static int ShardCount(DemoZooConfig c, long shardBytes)
    {
        int shards = 1;
        long current = 0;
        foreach (var (_, shape) in Layout(c))
        {
            long bytes = shape.Aggregate(4L, (a, d) => a * d);
            if (current > 0 && current + bytes > shardBytes) { shards++; current = 0; }
            current += bytes;
        }
        return shards;
    }

    /// <summary>SplitMix64 with Box-Muller: tiny, fast, and independent of torch's generator.</summary>
    sealed class SplitMix(ulong seed)
    {
        ulong _state = seed;
        float? _spare;

        ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        double NextUnit() => ((Next() >> 11) + 0.5) * (1.0 / (1UL << 53)); // in (0, 1)

        public float NextGaussian()
        {
            if (_spare is { } s) { _spare = null; return s; }
            double r = Math.Sqrt(-2.0 * Math.Log(NextUnit())), theta = 2.0 * Math.PI * NextUnit();
            _spare = (float)(r * Math.Sin(theta));
            return (float)(r * Math.Cos(theta));
        }
    }
}
