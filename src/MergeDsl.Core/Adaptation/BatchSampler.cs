using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>Draws each step's unlabelled batch per task (uniformly with replacement, seeded).</summary>
internal sealed class BatchSampler
{
    readonly IReadOnlyList<TaskData> tasks;
    readonly int batch;
    readonly Generator gen;
    readonly ImagePreprocess preprocess;
    readonly Device device;

    public BatchSampler(IReadOnlyList<TaskData> tasks, int batch, long seed, ImagePreprocess? preprocess, Device device, bool needLabels = false)
    {
        if (tasks.Count == 0) throw new ArgumentException("adaptation needs data for at least one task");
        foreach (var t in tasks)
        {
            if (t.Count == 0) throw new ArgumentException($"task {t.Task}: no images");
            if (needLabels && t.Labels is null) throw new ArgumentException($"task {t.Task}: the supervised objective needs labels, the data has none");
        }
        this.tasks = tasks; this.batch = batch; this.device = device;
        this.preprocess = preprocess ?? ImagePreprocess.Symmetric((int)tasks[0].Images.shape[1]);
        gen = new Generator((ulong)seed);
    }

    /// <summary>
    /// One batch [B, C, H, W] of model-ready pixels per task, in task order, with the batch's labels [B] where the
    /// task has labels (null otherwise).
    /// </summary>
    public IReadOnlyList<(Tensor Input, Tensor? Labels)> Next() => tasks.Select(t =>
    {
        var idx = torch.randint(0, t.Count, [batch], dtype: ScalarType.Int64, generator: gen);
        return (preprocess.Apply(t.Images.index_select(0, idx), device), t.Labels?.index_select(0, idx).to(device));
    }).ToList();
}
