using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// WEMoE test-time adaptation: trains only the router parameters (every other parameter is frozen) to
/// minimise Σ_tasks of the objective (mean entropy by default) of head_task(model(x)) on unlabelled batches, with Adam (lr 1e-4 by default).
/// With per-sample routing all tasks' batches run in one forward pass (the outputs do not depend on
/// batch-mates); with batch_reduce each task's batch runs alone, as in FusionBench.
/// </summary>
public static class RouterAdaptation
{
    /// <summary>Adapts <paramref name="moe"/> in place; reports each step to <paramref name="onStep"/>; <paramref name="monitor"/> may steer the run.</summary>
    public static AdaptResult Run(MoeModel moe, IReadOnlyDictionary<string, ClassificationHead> heads, IReadOnlyList<TaskData> data,
        ImagePreprocess? preprocess, AdaptOptions options, Action<AdaptStep>? onStep = null, IAdaptMonitor? monitor = null,
        Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        var device = options.Device ?? CPU;
        var missing = data.Where(d => !heads.ContainsKey(d.Task)).Select(d => d.Task).ToList();
        if (missing.Count > 0) throw new ArgumentException($"no head for task(s) {string.Join(", ", missing)}");
        var routerNames = moe.RouterParameterNames().ToHashSet();
        if (routerNames.Count == 0) throw new ArgumentException("the model has no trainable routers (SMILE is training-free; use a WEMoE model)");
        var model = moe.Model;
        model.to(device);
        foreach (var h in heads.Values) h.to(device);
        var trainable = new List<Parameter>();
        foreach (var (name, p) in model.named_parameters())
        {
            bool train = routerNames.Contains(name);
            p.requires_grad = train;
            if (train) trainable.Add(p);
        }
        bool together = !moe.Spec.BatchReduce;
        IReadOnlyList<Tensor> Logits(IReadOnlyList<Tensor> batches)
        {
            if (!together)
                return data.Select((d, t) => heads[d.Task].forward(model.forward(batches[t]))).ToList();
            var emb = model.forward(torch.cat(batches.ToArray(), 0));
            return AdaptationLoop.SplitByTask(emb, batches, (t, e) => heads[data[t].Task].forward(e));
        }
        model.train();
        AdaptResult result;
        try
        {
            result = AdaptationLoop.Run(trainable, routerNames.OrderBy(n => n, StringComparer.Ordinal).ToList(), data, Logits, options, 1e-4,
                preprocess, onStep, monitor, teacher);
        }
        finally
        {
            model.eval();
            foreach (var p in model.parameters()) p.requires_grad = false;
        }
        return result;
    }
}
