using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models;

/// <summary>
/// A model folder as this project writes and reads it:
/// <code>
/// config.json                 CLIPConfig fields (vision_config, projection_dim); optional
///                             "mergedsl_preprocess": {"mean": [...], "std": [...]} and "mergedsl_moe": {...}
/// model.safetensors           the encoder (HF names; sharded with an index when large)
/// heads/&lt;task&gt;.safetensors  one per task: weight [classes, projection_dim] F32, logit_scale [] F32
/// </code>
/// </summary>
public static class ClipModelFolder
{
    /// <summary>Folder holding the task heads.</summary>
    public const string HeadsFolder = "heads";

    /// <summary>Reads the config.json of a model folder as a JSON object.</summary>
    public static JsonObject ReadConfigJson(string folder)
    {
        string file = Path.Combine(folder, "config.json");
        ModelFiles.RefuseUnfinished(folder);
        if (UnixFiles.TryStat(file, followLinks: false) is null) throw new FileNotFoundException($"{folder}: no config.json (expected a CLIP model folder)");
        try { return JsonNode.Parse(ModelFiles.ReadText(file, folder)) as JsonObject ?? throw new FormatException($"{file}: expected a JSON object"); }
        catch (JsonException e) { throw new FormatException($"{file}: not valid JSON ({e.Message})"); }
    }

    /// <summary>The <c>mergedsl_preprocess</c> section, or null.</summary>
    public static ImagePreprocess? ReadPreprocess(JsonObject config)
    {
        if (config["mergedsl_preprocess"] is not JsonObject p) return null;
        float[] Arr(string k) => (p[k] as JsonArray)?.Select(n => n!.GetValue<float>()).ToArray()
                                 ?? throw new FormatException($"config.json: mergedsl_preprocess.{k} must be an array of numbers");
        return new ImagePreprocess(Arr("mean"), Arr("std"));
    }

    /// <summary>The JSON of a preprocessing section.</summary>
    public static JsonObject PreprocessJson(ImagePreprocess p) => new()
    {
        ["mean"] = new JsonArray(p.Mean.Select(v => (JsonNode)v).ToArray()),
        ["std"] = new JsonArray(p.Std.Select(v => (JsonNode)v).ToArray()),
    };

    /// <summary>Loads every <c>heads/*.safetensors</c> of a folder (empty when there is none).</summary>
    public static Dictionary<string, ClassificationHead> LoadHeads(string folder)
    {
        var heads = new Dictionary<string, ClassificationHead>(StringComparer.Ordinal);
        string dir = Path.Combine(folder, HeadsFolder);
        if (!Directory.Exists(dir)) return heads;
        foreach (var file in Directory.GetFiles(dir, "*.safetensors").OrderBy(f => f, StringComparer.Ordinal))
        {
            string task = Path.GetFileNameWithoutExtension(file);
            heads[task] = LoadHead(task, file, folder);
        }
        return heads;
    }

    /// <summary>Loads one head file (<c>weight</c> [classes, dim], optional <c>logit_scale</c>, default 100).</summary>
    /// <param name="task">Task name.</param>
    /// <param name="file">The head's safetensors file.</param>
    /// <param name="modelFolder">The model folder holding heads/ (its link rule and marker apply); null: the file's folder.</param>
    public static ClassificationHead LoadHead(string task, string file, string? modelFolder = null)
    {
        using var ck = Checkpoint.Open(file, modelFolder, zeroCopy: false, policy: null);
        if (!ck.TryGetInfo("weight", out _)) throw new CheckpointFormatException(file, "head has no tensor 'weight' [classes, projection_dim]");
        using var w = ck.Load("weight");
        float scale = 100f;
        if (ck.TryGetInfo("logit_scale", out _))
        {
            using var s = ck.Load("logit_scale");
            scale = s.to(ScalarType.Float32).flatten()[0].item<float>();
        }
        return new ClassificationHead(task, w, scale);
    }

    /// <summary>Writes a head file.</summary>
    public static void SaveHead(string file, ClassificationHead head)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(file))!);
        string tmp = file + ".tmp";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        var tensors = new Dictionary<string, Tensor>
        {
            ["weight"] = head.Weight.detach().cpu(),
            ["logit_scale"] = torch.tensor(head.LogitScale),
        };
        CheckpointWriter.WriteAll(tmp, tensors, new CheckpointWriterOptions { Overwrite = true });
        File.Move(Path.Combine(tmp, Checkpoint.SingleFileName), file, overwrite: true);
        Directory.Delete(tmp, true);
    }

    /// <summary>
    /// Writes a model folder atomically (temporary folder, then rename): the model's parameters,
    /// config.json (the CLIP config plus <paramref name="extraConfig"/> sections), and the heads.
    /// <paramref name="output"/>: the caller's reservation of <paramref name="folder"/> (else one is taken here);
    /// <paramref name="extraFiles"/>: more small text files to appear with the model.
    /// </summary>
    public static void Save(string folder, ClipVisionModel model, IReadOnlyDictionary<string, ClassificationHead> heads,
        IReadOnlyDictionary<string, JsonNode>? extraConfig = null, ImagePreprocess? preprocess = null, bool overwrite = false,
        IReadOnlyDictionary<string, string>? metadata = null, OutputFolder? output = null,
        IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var state = model.StateTensors();
        try
        {
            var layout = state.Select(kv => (kv.Key, DTypes.FromTorch(kv.Value.dtype), kv.Value.shape)).ToList();
            using var writer = CheckpointWriter.Create(folder, layout, new CheckpointWriterOptions
            {
                Overwrite = overwrite,
                Output = output,
                Metadata = metadata ?? new Dictionary<string, string>(),
                ExtraFiles = extraFiles ?? new Dictionary<string, string>(),
            });
            foreach (var (name, t) in state) writer.Write(name, t);
            var config = model.Config.ToJsonObject();
            if (preprocess is not null) config["mergedsl_preprocess"] = PreprocessJson(preprocess);
            if (extraConfig is not null)
                foreach (var (k, v) in extraConfig) config[k] = v.DeepClone();
            File.WriteAllText(Path.Combine(writer.TemporaryFolder, "config.json"),
                config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            foreach (var (task, head) in heads)
                SaveHead(Path.Combine(writer.TemporaryFolder, HeadsFolder, task + ".safetensors"), head);
            writer.Commit();
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>Loads weights from a checkpoint (any <see cref="ITensorSource"/>) into <paramref name="model"/>.</summary>
    public static IReadOnlyList<string> LoadWeights(ClipVisionModel model, ITensorSource source)
        => model.LoadWeights(source.Tensors.Select(t => t.Name),
            n => source.TryGetInfo(n, out var info) ? info.Shape : null,
            source.Load, source.Label);

    /// <summary>Opens a plain CLIP model folder (config.json + weights) with its heads.</summary>
    public static (ClipVisionModel Model, Dictionary<string, ClassificationHead> Heads) LoadPlain(string folder)
    {
        var cfg = ClipVisionConfig.Load(folder);
        var model = new ClipVisionModel(cfg);
        using (var ck = Checkpoint.Open(folder)) LoadWeights(model, ck);
        return (model, LoadHeads(folder));
    }
}
