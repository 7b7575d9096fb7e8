using System.Diagnostics;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Watches a running adaptation and may steer it (e.g. a guard against prediction collapse): it sees the state
/// before the first step, after every step and at the end, through <see cref="AdaptControl"/>.
/// </summary>
public interface IAdaptMonitor
{
    /// <summary>Before the first step.</summary>
    void Start(AdaptControl control);
    /// <summary>After each step (the optimiser has already stepped).</summary>
    void AfterStep(AdaptStep step, AdaptControl control);
    /// <summary>After the last step (or after a stop).</summary>
    void Finish(AdaptControl control);
}

/// <summary>What a monitor can see and change in a running adaptation.</summary>
public sealed class AdaptControl
{
    readonly Func<IReadOnlyList<Tensor>, IReadOnlyList<Tensor>> logits;

    internal AdaptControl(IReadOnlyList<Parameter> trainable, IReadOnlyList<string> tasks, Func<IReadOnlyList<Tensor>, IReadOnlyList<Tensor>> logits)
    {
        Trainable = trainable;
        Tasks = tasks;
        InObjective = Enumerable.Repeat(true, tasks.Count).ToArray();
        this.logits = logits;
    }

    /// <summary>The trained parameters (a monitor may snapshot and restore them under no_grad).</summary>
    public IReadOnlyList<Parameter> Trainable { get; }
    /// <summary>Task names, in data order.</summary>
    public IReadOnlyList<string> Tasks { get; }
    /// <summary>Whether each task's entropy enters the objective; a task set to false still runs but no longer pulls the parameters.</summary>
    public bool[] InObjective { get; }
    /// <summary>Set to end adaptation after the current step.</summary>
    public bool Stop { get; set; }
    internal bool ResetRequested { get; set; }

    /// <summary>Asks for a fresh optimiser state (after the monitor restored the parameters).</summary>
    public void ResetOptimizer() => ResetRequested = true;

    /// <summary>Per-task logits of model-ready pixel batches (one per task, in task order) under the current parameters, without gradients.</summary>
    public IReadOnlyList<Tensor> Logits(IReadOnlyList<Tensor> batches)
    {
        using var _ = no_grad();
        return logits(batches);
    }
}

/// <summary>
/// The one test-time adaptation loop (WEMoE routers, AdaMerging coefficients): Adam on Σ over tasks in the
/// objective of each task's loss (<see cref="AdaptOptions.Objective"/>) on unlabelled batches drawn per task each step.
/// </summary>
public static class AdaptationLoop
{
    /// <summary>
    /// Trains <paramref name="trainable"/>. <paramref name="logits"/> maps one model-ready batch per task (task
    /// order) to that task's head logits under the current parameters (with gradients when enabled).
    /// <paramref name="teacher"/> (task index, model-ready batch → logits) is required by
    /// <see cref="AdaptObjective.Distillation"/> and run without gradients.
    /// </summary>
    public static AdaptResult Run(IReadOnlyList<Parameter> trainable, IReadOnlyList<string> trainedNames, IReadOnlyList<TaskData> data,
        Func<IReadOnlyList<Tensor>, IReadOnlyList<Tensor>> logits, AdaptOptions options, double defaultLr, ImagePreprocess? preprocess,
        Action<AdaptStep>? onStep = null, IAdaptMonitor? monitor = null, Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        if (options.Objective == AdaptObjective.Distillation && teacher is null)
            throw new ArgumentException("the distillation objective needs the experts (teachers), one per task");
        var device = options.Device ?? CPU;
        var sampler = new BatchSampler(data, options.BatchPerTask, options.Seed, preprocess, device,
            needLabels: options.Objective == AdaptObjective.Supervised);
        return RunBatches(trainable, trainedNames, data.Select(d => d.Task).ToList(), sampler.Next, logits, options, defaultLr,
            onStep, monitor, teacher);
    }

    /// <summary>
    /// The loop over any kind of input (images, token windows): <paramref name="nextBatches"/> draws one model-ready
    /// batch per task (task order) with its labels where the objective needs them (the supervised objective); the
    /// rows of each task's logits are what the objective averages over. <paramref name="teacher"/> maps (task index,
    /// that task's input batch) to logits shaped like the model's.
    /// </summary>
    public static AdaptResult RunBatches(IReadOnlyList<Parameter> trainable, IReadOnlyList<string> trainedNames, IReadOnlyList<string> tasks,
        Func<IReadOnlyList<(Tensor Input, Tensor? Labels)>> nextBatches, Func<IReadOnlyList<Tensor>, IReadOnlyList<Tensor>> logits,
        AdaptOptions options, double defaultLr, Action<AdaptStep>? onStep = null, IAdaptMonitor? monitor = null,
        Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        if (options.Objective == AdaptObjective.Distillation && teacher is null)
            throw new ArgumentException("the distillation objective needs the experts (teachers), one per task");
        var control = new AdaptControl(trainable, tasks, logits);
        double lr = options.LearningRate ?? defaultLr;
        var adam = optim.Adam(trainable, lr: lr);
        var log = new List<AdaptStep>();
        using var gradOn = enable_grad();   // callers may be inside no_grad
        var clock = Stopwatch.StartNew();
        try
        {
            monitor?.Start(control);
            for (int step = 1; step <= options.Steps && !control.Stop && control.InObjective.Any(a => a); step++)
            {
                AdaptStep s;
                using (var scope = NewDisposeScope())
                {
                    adam.zero_grad();
                    var batches = nextBatches();
                    var perTaskLogits = logits(batches.Select(b => b.Input).ToList());
                    var entropies = perTaskLogits.Select(EntropyObjective.MeanEntropy).ToList();
                    Tensor? Teacher(int t)
                    {
                        if (options.Objective != AdaptObjective.Distillation) return null;
                        using var _ = no_grad();
                        return teacher!(t, batches[t].Input);
                    }
                    var losses = options.Objective == AdaptObjective.Entropy
                        ? entropies
                        : perTaskLogits.Select((l, t) => EntropyObjective.Loss(options.Objective, l, options.DiversityWeight, batches[t].Labels, Teacher(t))).ToList();
                    var loss = torch.stack(losses.Where((_, t) => control.InObjective[t]).ToArray()).sum();
                    float lossValue = loss.item<float>();
                    if (!float.IsFinite(lossValue))
                        throw new NonFiniteException($"adaptation: the objective is {lossValue} at step {step}; stopped (lower --lr, check the data)");
                    loss.backward();
                    adam.step();
                    CheckFinite(trainable, step);
                    var perTask = new Dictionary<string, double>();
                    for (int t = 0; t < tasks.Count; t++) perTask[tasks[t]] = entropies[t].item<float>();
                    s = new AdaptStep(step, lossValue, perTask, clock.Elapsed.TotalSeconds);
                }
                log.Add(s);
                onStep?.Invoke(s);
                // Outside the step's dispose scope: what the monitor keeps (snapshots) must outlive the step.
                monitor?.AfterStep(s, control);
                if (control.ResetRequested)
                {
                    adam.Dispose();
                    adam = optim.Adam(trainable, lr: lr);
                    control.ResetRequested = false;
                }
            }
            monitor?.Finish(control);
        }
        finally { adam.Dispose(); }
        return new AdaptResult(log, clock.Elapsed.TotalSeconds, Memory.PeakMemory.PeakResidentBytes(), trainedNames);
    }

    static void CheckFinite(IReadOnlyList<Parameter> trainable, int step)
    {
        using var _ = no_grad();
        foreach (var p in trainable)
        {
            using var finite = isfinite(p).all();
            if (!finite.item<bool>())
                throw new NonFiniteException($"adaptation: a trained parameter became NaN/Inf at step {step}; stopped (lower --lr)");
        }
    }

    /// <summary>
    /// Splits embeddings of the concatenated per-task batches back by task and applies each task's head:
    /// <paramref name="head"/>(task index, that task's rows).
    /// </summary>
    public static IReadOnlyList<Tensor> SplitByTask(Tensor embeddings, IReadOnlyList<Tensor> batches, Func<int, Tensor, Tensor> head)
    {
        long at = 0;
        var outs = new List<Tensor>(batches.Count);
        for (int t = 0; t < batches.Count; t++)
        {
            long b = batches[t].shape[0];
            outs.Add(head(t, embeddings.narrow(0, at, b)));
            at += b;
        }
        return outs;
    }
}
