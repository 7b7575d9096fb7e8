using System.Diagnostics;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// WEMoE test-time adaptation: trains only the router parameters (every other parameter is frozen) to
/// minimise Σ_tasks mean entropy of head_task(model(x)) on unlabelled batches, with Adam (lr 1e-4).
/// With per-sample routing all tasks' batches run in one forward pass (the outputs do not depend on
/// batch-mates); with batch_reduce each task's batch runs alone, as in FusionBench.
/// </summary>
public static class RouterAdaptation
{
    /// <summary>Adapts <paramref name="moe"/> in place; reports each step to <paramref name="onStep"/>.</summary>
    public static AdaptResult Run(MoeModel moe, IReadOnlyDictionary<string, ClassificationHead> heads, IReadOnlyList<TaskData> data,
        ImagePreprocess? preprocess, AdaptOptions options, Action<AdaptStep>? onStep = null)
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
        using var adam = optim.Adam(trainable, lr: options.LearningRate ?? 1e-4);
        var sampler = new BatchSampler(data, options.BatchPerTask, options.Seed, preprocess, device);
        bool together = !moe.Spec.BatchReduce;
        var log = new List<AdaptStep>();
        using var gradOn = enable_grad();   // callers may be inside no_grad
        var clock = Stopwatch.StartNew();
        model.train();
        for (int step = 1; step <= options.Steps; step++)
        {
            using var scope = NewDisposeScope();
            adam.zero_grad();
            var batches = sampler.Next();
            var entropies = new List<Tensor>();
            if (together)
            {
                var emb = model.forward(torch.cat(batches, 0));
                for (int t = 0; t < data.Count; t++)
                    entropies.Add(EntropyObjective.MeanEntropy(heads[data[t].Task].forward(emb.narrow(0, (long)t * options.BatchPerTask, options.BatchPerTask))));
            }
            else
            {
                for (int t = 0; t < data.Count; t++)
                    entropies.Add(EntropyObjective.MeanEntropy(heads[data[t].Task].forward(model.forward(batches[t]))));
            }
            var loss = torch.stack(entropies.ToArray()).sum();
            loss.backward();
            adam.step();
            var perTask = new Dictionary<string, double>();
            for (int t = 0; t < data.Count; t++) perTask[data[t].Task] = entropies[t].item<float>();
            var s = new AdaptStep(step, loss.item<float>(), perTask, clock.Elapsed.TotalSeconds);
            log.Add(s);
            onStep?.Invoke(s);
        }
        model.eval();
        foreach (var p in model.parameters()) p.requires_grad = false;
        return new AdaptResult(log, clock.Elapsed.TotalSeconds, EntropyObjective.PeakRssBytes(), routerNames.OrderBy(n => n, StringComparer.Ordinal).ToList());
    }
}
