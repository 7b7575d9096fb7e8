using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Checks shared by <c>adapt</c> and <c>eval</c> before any work: every data task has a head, images fit the model and
/// are finite, and the batch fits in memory.
/// </summary>
public static class AdaptInputs
{
    /// <summary>The part of the available memory a batch may take; the rest is the model, the data and the runtime.</summary>
    const double MemoryShare = 0.8;

    /// <summary>
    /// Throws (one line, naming the task and file) when a task has data in <paramref name="dataFolder"/> but no head.
    /// Both commands refuse such a task rather than skip it, so a typo in a file name never passes silently.
    /// </summary>
    public static void CheckHeads(IEnumerable<string> dataTasks, IReadOnlyCollection<string> heads, string dataFolder, string model)
    {
        var headless = dataTasks.Where(t => !heads.Contains(t)).ToList();
        if (headless.Count > 0)
            throw new ArgumentException(
                $"no head for task(s) {string.Join(", ", headless)} in {model} (heads: {(heads.Count == 0 ? "none" : string.Join(", ", heads))}); "
                + $"add the head or remove {string.Join(", ", headless.Select(t => Path.Combine(dataFolder, t + ".safetensors")))}");
    }

    /// <summary>Throws when a task's images do not fit <paramref name="cfg"/> or hold NaN/Inf.</summary>
    public static void CheckData(IReadOnlyList<TaskData> data, ClipVisionConfig cfg, string dataFolder)
    {
        foreach (var d in data)
        {
            string file = Path.Combine(dataFolder, d.Task + ".safetensors");
            var s = d.Images.shape;
            if (s.Length != 4 || s[1] != cfg.NumChannels || s[2] != cfg.ImageSize || s[3] != cfg.ImageSize)
                throw new ArgumentException(
                    $"{file}: images are [{string.Join(", ", s)}], the model takes [N, {cfg.NumChannels}, {cfg.ImageSize}, {cfg.ImageSize}]");
            if (d.Count == 0) throw new ArgumentException($"{file}: no images");
            if (d.Images.is_floating_point())
            {
                using var finite = isfinite(d.Images).all();
                if (!finite.item<bool>()) throw new ArgumentException($"{file}: images contain NaN or Inf");
            }
        }
    }

    /// <summary>
    /// Upper estimate of the memory one image takes through the model (float32): per layer the activations kept for the
    /// backward pass (12·T·d for norms, projections and residuals, 2·T·m for the MLP, 2·h·T² for attention), plus for each
    /// routed module the per-sample merged weights (the WEMoE MLP builds W₀ + Σ rᵢτᵢ per sample: 2·(2·m·d)), doubled
    /// for the gradients when training.
    /// </summary>
    public static long BytesPerSample(ClipVisionConfig cfg, int routedSites, bool training)
    {
        long t = cfg.NumPositions, d = cfg.HiddenSize, m = cfg.IntermediateSize, h = cfg.NumAttentionHeads;
        long perLayer = 12 * t * d + 2 * t * m + 2 * h * t * t;
        long floats = cfg.NumHiddenLayers * perLayer + routedSites * 2L * (2 * m * d)
                      + (long)cfg.NumChannels * cfg.ImageSize * cfg.ImageSize;
        return 4 * floats * (training ? 2 : 1);
    }

    /// <summary>Memory the process can still use: MemAvailable of /proc/meminfo where there is one, else what the GC reports.</summary>
    public static long AvailableBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    long avail = long.Parse(parts[1]) * 1024;
                    return Math.Min(avail, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
                }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    /// <summary>The largest batch (per task, <paramref name="tasks"/> tasks per step) that fits in <paramref name="availableBytes"/>.</summary>
    public static long MaxBatch(long bytesPerSample, int tasks, long availableBytes) =>
        Math.Max(1, (long)(availableBytes * MemoryShare) / (bytesPerSample * Math.Max(1, tasks)));

    /// <summary>Throws when <paramref name="batch"/> images per task for <paramref name="tasks"/> tasks would not fit, naming the bound.</summary>
    public static void CheckBatch(string option, int batch, int tasks, long bytesPerSample, long availableBytes)
    {
        long max = MaxBatch(bytesPerSample, tasks, availableBytes);
        if (batch > max)
            throw new ArgumentException(
                $"{option} {batch}: does not fit in memory: about {Checkpoints.ByteSize.Format(bytesPerSample)} per image × {tasks} task(s) against {Checkpoints.ByteSize.Format(availableBytes)} available allows at most {max}");
    }
}
