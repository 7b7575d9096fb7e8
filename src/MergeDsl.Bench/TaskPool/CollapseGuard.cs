using MergeDsl.Core.Adaptation;
using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>What an adaptation run did.</summary>
public sealed record AdaptationReport(int StepsRun, bool CollapseDetected, int RestoredStep, double FirstLoss, double LastLoss,
    IReadOnlyList<double> InitialHistogramEntropy, IReadOnlyList<double> FinalHistogramEntropy)
{
    /// <summary>Tasks the guard removed from the objective after their predictions collapsed.</summary>
    public IReadOnlyList<string> ExcludedTasks { get; init; } = [];
}

/// <summary>
/// A label-free guard against collapse, run as a monitor of the core adaptation loop: every
/// <see cref="AdaptationSettings.CheckEvery"/> steps the normalised entropy of each task's prediction-class
/// histogram on a fixed probe batch is compared with its value before adaptation; when one drops below
/// <see cref="AdaptationSettings.CollapseRatio"/> of it, the trained parameters of the last healthy check are
/// restored, that task leaves the objective, and adaptation goes on with the others; when a task that already
/// left collapses again (dragged by the others), the last healthy state is restored and adaptation stops. Steps
/// after the last check are vetted at the end. No labels are read.
/// </summary>
public sealed class CollapseGuard : IAdaptMonitor, IDisposable
{
    readonly AdaptationSettings s;
    readonly List<Tensor> probes;
    readonly Action<string>? log;
    List<Tensor> snapshot = [];
    double[] h0 = [], h = [];
    int snapshotStep, lastStep;
    bool collapsed;
    double first = double.NaN, last = double.NaN;
    AdaptControl? control;

    /// <summary>A guard probing the first <see cref="AdaptationSettings.ProbeImages"/> images (model-ready pixels) of each task.</summary>
    public CollapseGuard(AdaptationSettings settings, IReadOnlyList<Tensor> probePixels, Action<string>? log = null)
    {
        s = settings;
        probes = probePixels.Select(p => p.narrow(0, 0, Math.Min(s.ProbeImages, p.shape[0])).clone().DetachFromDisposeScope()).ToList();
        this.log = log;
    }

    /// <summary>Entropy of the predicted-class histogram divided by log(classes): 1 = uniform, 0 = one class.</summary>
    public static double HistogramEntropy(Tensor logits)
    {
        using var scope = NewDisposeScope();
        long c = logits.shape[1];
        var counts = logits.argmax(1).bincount(null, c).to_type(ScalarType.Float64);
        var p = counts / counts.sum();
        var e = -(p * p.Plus(1e-12).log()).sum().item<double>();
        return e / Math.Log(c);
    }

    double[] Probe(AdaptControl c)
    {
        using var scope = NewDisposeScope();
        return c.Logits(probes).Select(HistogramEntropy).ToArray();
    }

    void Restore(AdaptControl c)
    {
        using var _ = no_grad();
        for (int i = 0; i < c.Trainable.Count; i++) c.Trainable[i].copy_(snapshot[i]);
    }

    void TakeSnapshot(AdaptControl c, int step)
    {
        foreach (var t in snapshot) t.Dispose();
        // Owned by the guard (disposed here or in Dispose), whatever dispose scope the loop runs in.
        snapshot = c.Trainable.Select(p => p.detach().clone().DetachFromDisposeScope()).ToList();
        snapshotStep = step;
    }

    List<int> Collapsed() => Enumerable.Range(0, h.Length).Where(i => h[i] < s.CollapseRatio * h0[i]).ToList();

    /// <inheritdoc />
    public void Start(AdaptControl c)
    {
        control = c;
        h0 = h = Probe(c);
        TakeSnapshot(c, 0);
    }

    /// <inheritdoc />
    public void AfterStep(AdaptStep step, AdaptControl c)
    {
        lastStep = step.Step;
        if (step.Step == 1) first = step.Loss;
        last = step.Loss;
        if (step.Step % s.CheckEvery != 0 && step.Step != s.Options.Steps) return;
        h = Probe(c);
        var bad = Collapsed();
        if (bad.Count == 0)
        {
            TakeSnapshot(c, step.Step);
            log?.Invoke($"adaptation step {step.Step}/{s.Options.Steps}: objective {last:F3}");
            return;
        }
        collapsed = true;
        Restore(c);
        var names = string.Join(", ", bad.Select(i => c.Tasks[i]));
        if (bad.Any(i => !c.InObjective[i]))
        {
            // A task that collapses again after leaving the objective is being dragged by the others:
            // the last healthy state is final.
            log?.Invoke($"adaptation: {names} collapsed at step {step.Step}; restored step {snapshotStep} and stopped");
            c.Stop = true;
        }
        else
        {
            foreach (var i in bad) c.InObjective[i] = false;
            c.ResetOptimizer();
            log?.Invoke($"adaptation: prediction histogram of {names} collapsed at step {step.Step}; restored step {snapshotStep}, task(s) left the objective");
        }
        h = Probe(c);
    }

    /// <inheritdoc />
    public void Finish(AdaptControl c)
    {
        if (snapshotStep >= lastStep) return;
        h = Probe(c);
        if (Collapsed().Count == 0) return;
        collapsed = true;
        Restore(c);
        h = Probe(c);
    }

    /// <summary>The run's report (after the loop ended).</summary>
    public AdaptationReport Report() => new(lastStep, collapsed, snapshotStep, first, last, h0, h)
    {
        ExcludedTasks = control is null ? [] : Enumerable.Range(0, control.Tasks.Count).Where(i => !control.InObjective[i]).Select(i => control.Tasks[i]).ToList(),
    };

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in snapshot.Concat(probes)) t.Dispose();
    }
}
