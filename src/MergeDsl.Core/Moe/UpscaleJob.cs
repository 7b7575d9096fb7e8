using System.Diagnostics;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;

namespace MergeDsl.Core.Moe;

/// <summary>What an upscaling run produced.</summary>
/// <param name="Output">The written model folder.</param>
/// <param name="Sites">Upscaled module paths.</param>
/// <param name="Parameters">Total parameters of the upscaled model.</param>
/// <param name="TrainableRouterParameters">Router parameters (what adaptation trains).</param>
/// <param name="Heads">Task heads copied into the output.</param>
/// <param name="Seconds">Wall time.</param>
public sealed record UpscaleSummary(string Output, IReadOnlyList<string> Sites, long Parameters, long TrainableRouterParameters,
    IReadOnlyList<string> Heads, double Seconds);

/// <summary>Folder-to-folder upscaling (what <c>mergedsl upscale</c> and the F# <c>Upscale</c> module run).</summary>
public static class UpscaleJob
{
    /// <summary>
    /// Reads the base model folder (config.json, weights, optional heads/) and the expert folders, upscales,
    /// and writes <paramref name="output"/> atomically with the union of all heads (the base's first, then each
    /// expert's; a task name seen twice keeps its first head). Expert names default to the folder names. The output is
    /// reserved (checked against the inputs, locked) before anything is read. A language-model base (a config.json without
    /// <c>vision_config</c>, see <see cref="DecoderMoeFolder.IsLanguageModel"/>) goes to <see cref="DecoderUpscaleJob.Run"/>.
    /// </summary>
    public static UpscaleSummary Run(string baseFolder, IReadOnlyList<string> expertFolders, string output, UpscaleSpec spec,
        MergeRecipe? rest = null, bool overwrite = false)
    {
        if (Directory.Exists(baseFolder) && DecoderMoeFolder.IsLanguageModel(baseFolder))
            return DecoderUpscaleJob.Run(baseFolder, expertFolders, output, spec, rest, overwrite);
        var clock = Stopwatch.StartNew();
        if (expertFolders.Count == 0) throw new ArgumentException("upscale: give at least one expert model");
        using var reserved = OutputFolder.Reserve(output, overwrite,
            expertFolders.Select(e => OutputInput.Of("--model", e)).Prepend(OutputInput.Of("--base", baseFolder)));
        var cfg = ClipVisionConfig.Load(baseFolder);
        var baseJson = ClipModelFolder.ReadConfigJson(baseFolder);
        if (baseJson[MoeModelFolder.ConfigSection] is not null)
            throw new ArgumentException($"{baseFolder}: is already an upscaled model; give the pretrained base");
        if (spec.ExpertNames.Count == 0)
            spec = spec with { ExpertNames = expertFolders.Select(f => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(f)))).ToList() };
        if (rest is not null && spec.Rest is null) spec = spec with { Rest = rest.Name };
        var heads = new Dictionary<string, ClassificationHead>(StringComparer.Ordinal);
        var sources = new List<ITensorSource>();
        try
        {
            foreach (var folder in expertFolders.Prepend(baseFolder))
            {
                var other = ClipVisionConfig.Load(folder);
                if (other != cfg) throw new ArgumentException($"{folder}: its config.json differs from the base model's ({baseFolder})");
                foreach (var (task, head) in ClipModelFolder.LoadHeads(folder))
                    if (!heads.TryAdd(task, head)) head.Dispose();
            }
            using var baseSource = Checkpoint.Open(baseFolder);
            foreach (var f in expertFolders) sources.Add(Checkpoint.Open(f));
            var moe = Upscaler.Upscale(cfg, baseSource, sources, spec, rest);
            using var model = moe.Model;
            MoeModelFolder.Save(output, model, moe, heads, ClipModelFolder.ReadPreprocess(baseJson), overwrite,
                UpscaleJob.Provenance(moe.Spec, moe.NumExperts, baseFolder, expertFolders), reserved);
            var (total, routers) = UpscaleJob.CountParameters(model, moe.RouterParameterNames());
            return new UpscaleSummary(output, moe.Sites.Keys.ToList(), total, routers, heads.Keys.ToList(), clock.Elapsed.TotalSeconds);
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
            foreach (var h in heads.Values) h.Dispose();
        }
    }

    /// <summary>The config.json entries that record how an upscaled folder was made (spec, base, experts).</summary>
    internal static Dictionary<string, string> Provenance(UpscaleSpec spec, int numExperts, string baseFolder, IEnumerable<string> expertFolders) =>
        new()
        {
            ["mergedsl_moe"] = spec.ToJson(numExperts).ToJsonString(),
            ["mergedsl_base"] = Path.GetFullPath(baseFolder),
            ["mergedsl_experts"] = string.Join(";", expertFolders.Select(Path.GetFullPath)),
        };

    /// <summary>Parameters of <paramref name="model"/> in all, and those of its routers.</summary>
    internal static (long Total, long Routers) CountParameters(TorchSharp.torch.nn.Module model, IEnumerable<string> routerNames)
    {
        var routers = routerNames.ToHashSet();
        long total = 0, routed = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            total += p.numel();
            if (routers.Contains(name)) routed += p.numel();
        }
        return (total, routed);
    }
}
