using System.Diagnostics;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe;

/// <summary>Folder-to-folder upscaling of Llama-family decoders (what <see cref="UpscaleJob.Run"/> runs for a language-model base).</summary>
public static class DecoderUpscaleJob
{
    /// <summary>
    /// Reads the base decoder folder and the expert folders (each with the base's config.json), upscales, and writes
    /// <paramref name="output"/> atomically (see <see cref="DecoderMoeFolder"/>) with the base's tokenizer files.
    /// Expert names default to the folder names. The output is reserved (checked against the inputs, locked) before anything is read.
    /// </summary>
    public static UpscaleSummary Run(string baseFolder, IReadOnlyList<string> expertFolders, string output, UpscaleSpec spec,
        MergeRecipe? rest = null, bool overwrite = false)
    {
        var clock = Stopwatch.StartNew();
        if (expertFolders.Count == 0) throw new ArgumentException("upscale: give at least one expert model");
        using var reserved = OutputFolder.Reserve(output, overwrite,
            expertFolders.Select(e => OutputInput.Of("--model", e)).Prepend(OutputInput.Of("--base", baseFolder)));
        foreach (var folder in expertFolders.Prepend(baseFolder))
            if (DecoderMoeFolder.IsDecoderMoe(folder))
                throw new ArgumentException($"{folder}: is already an upscaled model; give the pretrained base and plain fine-tuned experts");
        var cfg = DecoderConfig.Load(baseFolder);
        foreach (var folder in expertFolders)
        {
            var other = DecoderConfig.Load(folder);
            if (other != cfg)
                throw new ArgumentException($"{folder}: its config.json differs from the base model's ({baseFolder}): {FirstDifference(cfg, other)}");
        }
        if (spec.ExpertNames.Count == 0)
            spec = spec with { ExpertNames = expertFolders.Select(f => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(f)))).ToList() };
        if (rest is not null && spec.Rest is null) spec = spec with { Rest = rest.Name };
        var sources = new List<ITensorSource>();
        try
        {
            using var baseSource = Checkpoint.Open(baseFolder);
            foreach (var f in expertFolders) sources.Add(Checkpoint.Open(f));
            var moe = DecoderUpscaler.Upscale(cfg, baseSource, sources, spec, rest);
            using var model = moe.Model;
            DecoderMoeFolder.Save(output, moe, baseFolder, overwrite,
                UpscaleJob.Provenance(moe.Spec, moe.NumExperts, baseFolder, expertFolders), reserved);
            var (total, routers) = UpscaleJob.CountParameters(model, moe.RouterParameterNames());
            return new UpscaleSummary(output, moe.Sites.Keys.ToList(), total, routers, [], clock.Elapsed.TotalSeconds);
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
        }
    }

    /// <summary>The first config.json field in which two configurations differ, as "key a vs b".</summary>
    static string FirstDifference(DecoderConfig a, DecoderConfig b)
    {
        var ja = a.ToJsonObject();
        var jb = b.ToJsonObject();
        foreach (var key in ja.Select(kv => kv.Key).Union(jb.Select(kv => kv.Key)))
        {
            string va = ja[key]?.ToJsonString() ?? "absent", vb = jb[key]?.ToJsonString() ?? "absent";
            if (va != vb) return $"{key} {vb} vs {va}";
        }
        return "the configurations differ";
    }
}
