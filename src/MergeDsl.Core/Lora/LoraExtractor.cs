using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using MergeDsl.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Lora;

/// <summary>
/// Extracts a PEFT LoRA adapter approximating model − base: for every 2-D float <c>*.weight</c> that is not an
/// embedding (the Linear layers of a transformer), the truncated SVD ΔW ≈ U_r Σ_r V_rᵀ gives B = U_r √Σ_r and
/// A = √Σ_r V_rᵀ, written with lora_alpha = r (scale 1), so applying the adapter adds exactly U_r Σ_r V_rᵀ.
/// Embeddings and tensors of other shapes are not adapted; those that differ are reported.
/// </summary>
public static class LoraExtractor
{
    /// <summary>True for the tensors an extraction adapts: 2-D float <c>*.weight</c>, not an embedding.</summary>
    public static bool IsAdaptable(TensorInfo t) =>
        t.Shape.Length == 2 && DTypes.IsFloatingPoint(t.DType) && t.Name.EndsWith(".weight", StringComparison.Ordinal) && !IsEmbedding(t.Name);

    /// <summary>Embedding tables by their Hugging Face names (<c>embed_tokens</c>, <c>wte</c>, <c>wpe</c>, <c>embeddings</c>).</summary>
    public static bool IsEmbedding(string name) =>
        name.Contains("embed", StringComparison.OrdinalIgnoreCase) || name.EndsWith("wte.weight", StringComparison.Ordinal)
        || name.EndsWith("wpe.weight", StringComparison.Ordinal);

    /// <summary>
    /// Writes the adapter (<c>adapter_config.json</c> + <c>adapter_model.safetensors</c>, float32) to
    /// <paramref name="target"/> atomically through <paramref name="options"/> (its output reservation and overwrite rule).
    /// </summary>
    /// <exception cref="ArgumentException">rank below 1.</exception>
    /// <exception cref="CheckpointFormatException">The model has a tensor the base lacks or shapes that differ (one line).</exception>
    public static LoraExtraction Extract(ITensorSource baseModel, ITensorSource model, int rank, string target,
        CheckpointWriterOptions options, string baseName, Action<LoraModuleReport>? onModule = null)
    {
        if (rank < 1) throw new ArgumentException($"rank must be at least 1, got {rank}");
        var adapted = new List<TensorInfo>();
        var others = new List<TensorInfo>();
        foreach (var t in model.Tensors)
        {
            string shown = Text.TerminalText.Sanitize(t.Name);
            if (!baseModel.TryGetInfo(t.Name, out var b))
                throw new CheckpointFormatException(model.Label, $"tensor '{shown}' is not in the base {baseModel.Label}");
            if (!b.Shape.SequenceEqual(t.Shape))
                throw new CheckpointFormatException(model.Label, $"tensor '{shown}' is {t.ShapeText}, the base's is {b.ShapeText}");
            (IsAdaptable(t) ? adapted : others).Add(t);
        }
        if (adapted.Count == 0) throw new CheckpointFormatException(model.Label, "has no 2-D *.weight tensor to extract a LoRA adapter from");
        var ranks = adapted.ToDictionary(t => t.Name, t => (int)Math.Min(rank, Math.Min(t.Shape[0], t.Shape[1])));
        var layout = new List<(string, DType, long[])>();
        foreach (var t in adapted)
        {
            string module = t.Name[..^".weight".Length];
            layout.Add(($"base_model.model.{module}.lora_A.weight", DType.F32, [ranks[t.Name], t.Shape[1]]));
            layout.Add(($"base_model.model.{module}.lora_B.weight", DType.F32, [t.Shape[0], ranks[t.Name]]));
        }
        var config = ConfigJson(adapted, ranks, rank, baseName);
        var writerOptions = options with
        {
            SingleFileName = LoraAdapter.WeightsFileName, MaxShardBytes = long.MaxValue, CopyFilesFrom = null,
            ExtraFiles = new Dictionary<string, string>(options.ExtraFiles) { [LoraAdapter.ConfigFileName] = config },
        };
        using var writer = CheckpointWriter.Create(target, layout, writerOptions);
        var reports = new List<LoraModuleReport>();
        foreach (var t in adapted)
        {
            using var scope = NewDisposeScope();
            string module = t.Name[..^".weight".Length];
            int r = ranks[t.Name];
            using var w0 = baseModel.Load(t.Name);
            using var w1 = model.Load(t.Name);
            var delta = w1.to_type(ScalarType.Float64).sub(w0.to_type(ScalarType.Float64));
            var (u, s, vh) = linalg.svd(delta, fullMatrices: false);
            var s2 = s.square();
            double total = s2.sum().item<double>();
            double kept = s2.narrow(0, 0, r).sum().item<double>();
            var root = s.narrow(0, 0, r).sqrt();
            var b = u.narrow(1, 0, r).mul(root.unsqueeze(0));
            var a = vh.narrow(0, 0, r).mul(root.unsqueeze(1));
            writer.Write($"base_model.model.{module}.lora_A.weight", a);
            writer.Write($"base_model.model.{module}.lora_B.weight", b);
            var report = new LoraModuleReport(module, r, t.Shape[0], t.Shape[1], total == 0 ? 1.0 : kept / total, Math.Sqrt(total));
            reports.Add(report);
            onModule?.Invoke(report);
        }
        var embeddings = new List<string>();
        var differing = new List<string>();
        foreach (var t in others)
        {
            using var scope = NewDisposeScope();
            using var x0 = baseModel.Load(t.Name);
            using var x1 = model.Load(t.Name);
            if (x0.eq(x1).all().item<bool>()) continue;
            (IsEmbedding(t.Name) ? embeddings : differing).Add(t.Name);
        }
        writer.Commit();
        return new LoraExtraction(reports, embeddings, differing);
    }

    static string ConfigJson(List<TensorInfo> adapted, Dictionary<string, int> ranks, int rank, string baseName)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("peft_type", "LORA");
            w.WriteString("base_model_name_or_path", baseName);
            w.WriteNumber("r", rank);
            w.WriteNumber("lora_alpha", rank);
            w.WriteStartArray("target_modules");
            foreach (var t in adapted) w.WriteStringValue(t.Name[..^".weight".Length]);
            w.WriteEndArray();
            // Modules smaller than the rank keep alpha = r, so every module's scale stays 1.
            var smaller = adapted.Where(t => ranks[t.Name] != rank).ToList();
            foreach (var key in new[] { "rank_pattern", "alpha_pattern" })
            {
                w.WriteStartObject(key);
                foreach (var t in smaller) w.WriteNumber(Regex.Escape(t.Name[..^".weight".Length]), ranks[t.Name]);
                w.WriteEndObject();
            }
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("use_rslora", false);
            w.WriteNumber("lora_dropout", 0.0);
            w.WriteString("bias", "none");
            w.WriteNull("modules_to_save");
            w.WriteBoolean("inference_mode", true);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }
}
