using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe;

/// <summary>
/// Upscaled decoder folders. config.json is the decoder's own config with two changes: <c>architectures</c> is
/// <c>["MergeDslDecoderMoE"]</c> and <c>model_type</c> is <c>mergedsl_decoder_moe</c> (so Hugging Face tooling refuses
/// the folder instead of loading a Llama with its MLP weights missing), and a <c>mergedsl_moe</c> section holds the
/// upscaling spec plus <c>decoder_architecture</c> and <c>decoder_model_type</c>, the base's originals. Weights are in
/// model.safetensors under the MoE names; tokenizer and other small files come from the base.
/// </summary>
public static class DecoderMoeFolder
{
    /// <summary>The <c>architectures</c> entry of an upscaled decoder.</summary>
    public const string Architecture = "MergeDslDecoderMoE";
    /// <summary>The <c>model_type</c> of an upscaled decoder.</summary>
    public const string ModelType = "mergedsl_decoder_moe";

    /// <summary>The config.json object of <paramref name="moe"/>.</summary>
    public static JsonObject ConfigJson(DecoderMoeModel moe)
    {
        var o = moe.Model.Config.ToJsonObject();
        var section = moe.Spec.ToJson(moe.NumExperts);
        section["decoder_architecture"] = moe.Model.Config.Family.Architecture();
        section["decoder_model_type"] = moe.Model.Config.Family.ModelType();
        o["architectures"] = new JsonArray(Architecture);
        o["model_type"] = ModelType;
        o[MoeModelFolder.ConfigSection] = section;
        return o;
    }

    /// <summary>Reads a folder's config.json as an object (one-line errors naming the file).</summary>
    static JsonObject ReadConfigJson(string folder)
    {
        ModelFiles.RefuseUnfinished(folder);
        string file = Path.Combine(folder, DecoderModelFolder.ConfigFile);
        if (UnixFiles.TryStat(file, followLinks: false) is null) throw new FileNotFoundException($"{folder}: no config.json", file);
        try { return JsonNode.Parse(ModelFiles.ReadText(file, folder)) as JsonObject ?? throw new FormatException($"{file}: expected a JSON object"); }
        catch (JsonException e) { throw new FormatException($"{file}: not valid JSON ({e.Message})"); }
    }

    /// <summary>True when <paramref name="config"/> is an upscaled decoder's config.json.</summary>
    public static bool IsDecoderMoe(JsonObject config)
        => config["model_type"] is JsonValue v && v.TryGetValue<string>(out var t) && t == ModelType;

    /// <summary>True when <paramref name="folder"/> holds an upscaled decoder.</summary>
    public static bool IsDecoderMoe(string folder) => IsDecoderMoe(ReadConfigJson(folder));

    /// <summary>
    /// True when <paramref name="folder"/>'s config.json describes a language model rather than a CLIP model: no
    /// <c>vision_config</c>, a <c>model_type</c> that is not CLIP's, and an <c>architectures</c> or <c>model_type</c> entry.
    /// Unknown architectures (GPT-2, …) count, so that the decoder reader names them. A missing or unreadable
    /// config.json answers false (the CLIP reader reports it as before).
    /// </summary>
    public static bool IsLanguageModel(string folder)
    {
        if (UnixFiles.TryStat(Path.Combine(folder, DecoderModelFolder.ConfigFile), followLinks: false) is null) return false;
        JsonObject o;
        try { o = ReadConfigJson(folder); }
        catch (Exception e) when (e is FormatException or IOException or CheckpointFormatException) { return false; }
        if (o["vision_config"] is not null) return false;
        string? type = o["model_type"] is JsonValue v && v.TryGetValue<string>(out var t) ? t : null;
        if (type is not null && type.StartsWith("clip", StringComparison.OrdinalIgnoreCase)) return false;
        return type is not null || o["architectures"] is not null;
    }

    /// <summary>The decoder configuration and upscaling spec of an upscaled decoder's config.json.</summary>
    public static (DecoderConfig Config, UpscaleSpec Spec, int NumExperts) ReadConfig(JsonObject o, string label)
    {
        if (o[MoeModelFolder.ConfigSection] is not JsonObject section)
            throw new FormatException($"{label}: model_type {ModelType} without a {MoeModelFolder.ConfigSection} section");
        string Original(string key) => section[key] is JsonValue v && v.TryGetValue<string>(out var s)
            ? s : throw new FormatException($"{label}: {MoeModelFolder.ConfigSection}.{key} is missing or not a string");
        var plain = (JsonObject)o.DeepClone();
        plain.Remove(MoeModelFolder.ConfigSection);
        plain["architectures"] = new JsonArray(Original("decoder_architecture"));
        plain["model_type"] = Original("decoder_model_type");
        var cfg = DecoderConfig.FromJson(plain.ToJsonString(), label);
        var (spec, n) = UpscaleSpec.FromJson(section, label);
        return (cfg, spec, n);
    }

    /// <summary>Loads an upscaled decoder folder on the CPU (float32).</summary>
    /// <exception cref="FormatException">config.json is not an upscaled decoder's, or is unusable.</exception>
    /// <exception cref="ModelWeightsException">Missing or mis-shaped tensors.</exception>
    public static DecoderMoeModel Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such model folder");
        string label = Path.Combine(folder, DecoderModelFolder.ConfigFile);
        var o = ReadConfigJson(folder);
        if (!IsDecoderMoe(o)) throw new FormatException($"{label}: not an upscaled decoder (model_type is not {ModelType})");
        var (cfg, spec, n) = ReadConfig(o, label);
        if (spec.BatchReduce) throw new FormatException($"{label}: {MoeModelFolder.ConfigSection}.batch_reduce is true; decoders route per token");
        var moe = DecoderMoeBuilder.Build(cfg, spec, n, label);
        try
        {
            using var ck = Checkpoint.Open(folder);
            moe.Model.LoadWeights(ck.Tensors.Select(t => t.Name), name => ck.TryGetInfo(name, out var info) ? info.Shape : null, ck.Load, ck.Label);
            return moe;
        }
        catch
        {
            moe.Model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="moe"/> atomically (float32): config.json as described above, model.safetensors, the small
    /// files (tokenizer, generation config) of <paramref name="copyFilesFrom"/>, and <paramref name="extraFiles"/>.
    /// <paramref name="output"/>: the caller's reservation of <paramref name="folder"/> (else one is taken here).
    /// </summary>
    public static void Save(string folder, DecoderMoeModel moe, string? copyFilesFrom = null, bool overwrite = false,
        IReadOnlyDictionary<string, string>? metadata = null, OutputFolder? output = null, IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var files = new Dictionary<string, string>(extraFiles ?? new Dictionary<string, string>())
        {
            [DecoderModelFolder.ConfigFile] = ConfigJson(moe).ToJsonString(new JsonSerializerOptions { WriteIndented = true }),
        };
        DecoderModelFolder.Write(folder, moe.Model, files, copyFilesFrom, overwrite, metadata, output);
    }
}
