using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Settings of entropy-minimisation test-time adaptation (AdaMerging, WEMoE routers).</summary>
public sealed record AdaptationSettings
{
    /// <summary>Adam steps.</summary>
    public int Steps { get; init; } = 1000;
    /// <summary>Adam learning rate.</summary>
    public double Lr { get; init; } = 1e-4;
    /// <summary>Unlabeled test images per task per step.</summary>
    public int BatchPerTask { get; init; } = 16;
    /// <summary>Steps between collapse checks.</summary>
    public int CheckEvery { get; init; } = 50;
    /// <summary>Unlabeled test images per task in the fixed probe batch the collapse check reads.</summary>
    public int ProbeImages { get; init; } = 256;
    /// <summary>
    /// The guard fires when a task's prediction-histogram entropy falls below this fraction of its value
    /// before adaptation (predictions piling onto few classes).
    /// </summary>
    public double CollapseRatio { get; init; } = 0.6;
    /// <summary>Seed of batch sampling.</summary>
    public int Seed { get; init; } = 7;
}

/// <summary>What an adaptation run did.</summary>
public sealed record AdaptationReport(int StepsRun, bool CollapseDetected, int RestoredStep, double FirstLoss, double LastLoss,
    IReadOnlyList<double> InitialHistogramEntropy, IReadOnlyList<double> FinalHistogramEntropy)
{
    /// <summary>Tasks the guard removed from the objective after their predictions collapsed.</summary>
    public IReadOnlyList<string> ExcludedTasks { get; init; } = [];
}

/// <summary>
/// Test-time adaptation by entropy minimisation on unlabeled test batches, with a label-free guard against
/// collapse: every <see cref="AdaptationSettings.CheckEvery"/> steps the normalised entropy of each task's
/// prediction-class histogram on a fixed probe batch is compared with its value before adaptation; when one
/// drops below <see cref="AdaptationSettings.CollapseRatio"/> of it, the parameters of the last healthy check
/// are restored, that task leaves the objective, and adaptation goes on with the others; when a task that already
/// left collapses again (dragged by the others), the last healthy state is restored and adaptation stops. No
/// labels are read.
/// </summary>
public static class TestTimeAdaptation
{
    /// <summary>Mean Shannon entropy of softmax(logits) over the batch.</summary>
    public static Tensor MeanEntropy(Tensor logits)
    {
        var logp = nn.functional.log_softmax(logits, 1);
        return -(logp.exp() * logp).sum(1).mean();
    }

    /// <summary>Entropy of the predicted-class histogram divided by log(classes): 1 = uniform, 0 = one class.</summary>
    public static double HistogramEntropy(Tensor logits)
    {
        using var scope = NewDisposeScope();
        long c = logits.shape[1];
        var counts = logits.argmax(1).bincount(null, c).to_type(ScalarType.Float64);
        var p = counts / counts.sum();
        var h = -(p * (p + 1e-12).log()).sum().item<double>();
        return h / Math.Log(c);
    }

    /// <summary>
    /// Runs adaptation of <paramref name="parameters"/>. <paramref name="logits"/> maps (task index, images) to the
    /// task head's logits under the current parameters.
    /// </summary>
    public static AdaptationReport Run(IReadOnlyList<Parameter> parameters, Func<int, Tensor, Tensor> logits,
        IReadOnlyList<TaskTensors> tasks, AdaptationSettings s, Action<string>? log = null)
    {
        var rng = new Random(s.Seed);
        var probes = tasks.Select(t => TaskTensors.ToInput(t.TestImages[TensorIndex.Slice(0, Math.Min(s.ProbeImages, t.TestImages.shape[0]))])).ToList();
        double[] Probe()
        {
            using var _ = no_grad();
            return probes.Select((x, i) => { using var sc = NewDisposeScope(); return HistogramEntropy(logits(i, x)); }).ToArray();
        }
        var h0 = Probe();
        var snapshot = parameters.Select(p => p.detach().clone()).ToList();
        int snapshotStep = 0;
        // Tasks whose predictions collapsed leave the objective: their inputs still run through the model,
        // but their entropy no longer pulls the parameters.
        var active = Enumerable.Repeat(true, tasks.Count).ToArray();
        var opt = optim.Adam(parameters, s.Lr);
        double first = double.NaN, last = double.NaN;
        bool collapsed = false;
        int step = 0;
        double[] h = h0;
        try
        {
            for (; step < s.Steps && active.Any(a => a); step++)
            {
                using (var scope = NewDisposeScope())
                {
                    Tensor loss = zeros(1);
                    for (int i = 0; i < tasks.Count; i++)
                        if (active[i]) loss = loss + MeanEntropy(logits(i, tasks[i].TestBatch(rng, s.BatchPerTask)));
                    opt.zero_grad();
                    loss.backward();
                    opt.step();
                    last = loss.item<float>();
                    if (step == 0) first = last;
                }
                if ((step + 1) % s.CheckEvery == 0 || step + 1 == s.Steps)
                {
                    h = Probe();
                    var bad = Enumerable.Range(0, tasks.Count).Where(i => h[i] < s.CollapseRatio * h0[i]).ToList();
                    if (bad.Count > 0)
                    {
                        collapsed = true;
                        using (no_grad())
                            for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(snapshot[i]);
                        // A task that collapses again after leaving the objective is being dragged by the others:
                        // the last healthy state is final.
                        if (bad.Any(i => !active[i]))
                        {
                            log?.Invoke($"adaptation: {string.Join(", ", bad.Select(i => tasks[i].Task.Name))} collapsed at step {step + 1}; restored step {snapshotStep} and stopped");
                            step++;
                            h = Probe();
                            break;
                        }
                        foreach (var i in bad) active[i] = false;
                        opt.Dispose();
                        opt = optim.Adam(parameters, s.Lr);
                        log?.Invoke($"adaptation: prediction histogram of {string.Join(", ", bad.Select(i => tasks[i].Task.Name))} collapsed at step {step + 1}; restored step {snapshotStep}, task(s) left the objective");
                        h = Probe();
                        continue;
                    }
                    for (int i = 0; i < parameters.Count; i++) { snapshot[i].Dispose(); snapshot[i] = parameters[i].detach().clone(); }
                    snapshotStep = step + 1;
                    log?.Invoke($"adaptation step {step + 1}/{s.Steps}: entropy loss {last:F3}");
                }
            }
            // Steps after the last check are not vetted: end on the last healthy state.
            if (snapshotStep < step)
            {
                h = Probe();
                if (Enumerable.Range(0, tasks.Count).Any(i => h[i] < s.CollapseRatio * h0[i]))
                {
                    collapsed = true;
                    using (no_grad())
                        for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(snapshot[i]);
                    h = Probe();
                }
            }
        }
        finally
        {
            opt.Dispose();
            foreach (var t in snapshot) t.Dispose();
            foreach (var t in probes) t.Dispose();
        }
        return new AdaptationReport(step, collapsed, snapshotStep, first, last, h0, h)
        {
            ExcludedTasks = Enumerable.Range(0, tasks.Count).Where(i => !active[i]).Select(i => tasks[i].Task.Name).ToList(),
        };
    }
}
