using MergeDsl.Core.Moe;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Test-time adaptation of a decoder MoE's routers with language-model objectives: only router parameters train, to
/// minimise Σ_tasks of the objective over every next-token prediction of each task's windows (Adam, lr 1e-4 by
/// default). Entropy (the paper's label-free objective, on next-token distributions), entropy-diversity, distillation
/// (KL from each task's expert on that task's windows; this project's objective) or supervised (next-token
/// cross-entropy, a diagnostic).
/// </summary>
public static class DecoderRouterAdaptation
{
    /// <summary>
    /// Adapts <paramref name="moe"/> in place on windows of <paramref name="sequenceLength"/> tokens
    /// (<see cref="AdaptOptions.BatchPerTask"/> windows per task per step).
    /// </summary>
    public static AdaptResult Run(DecoderMoeModel moe, IReadOnlyList<TextTaskData> data, int sequenceLength, AdaptOptions options,
        Action<AdaptStep>? onStep = null, IAdaptMonitor? monitor = null, Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        var device = options.Device ?? CPU;
        var routerNames = moe.RouterParameterNames().ToHashSet();
        if (routerNames.Count == 0) throw new ArgumentException("the model has no trainable routers (SMILE is training-free; use a WEMoE model)");
        var model = moe.Model;
        if (sequenceLength > model.Config.MaxPositionEmbeddings)
            throw new SettingException("sequence length", $"{sequenceLength} is longer than max_position_embeddings {model.Config.MaxPositionEmbeddings}");
        var windows = new TokenWindows(data, options.BatchPerTask, sequenceLength, options.Seed, device);
        model.to(device);
        var trainable = new List<Parameter>();
        foreach (var (name, p) in model.named_parameters())
        {
            bool train = routerNames.Contains(name);
            p.requires_grad = train;
            if (train) trainable.Add(p);
        }
        model.train();
        try
        {
            return AdaptationLoop.RunBatches(trainable, routerNames.OrderBy(n => n, StringComparer.Ordinal).ToList(),
                data.Select(d => d.Task).ToList(), windows.Next, batches => DecoderLm.PerTask(model, batches), options, 1e-4,
                onStep, monitor, teacher);
        }
        finally
        {
            model.eval();
            foreach (var p in model.parameters()) p.requires_grad = false;
        }
    }
}
