using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>Settings of test-time adaptation (entropy or entropy-diversity minimisation on unlabelled batches).</summary>
public sealed record AdaptOptions
{
    /// <summary>Optimiser steps (default 1000, as in WEMoE).</summary>
    public int Steps { get; init; } = 1000;
    /// <summary>Unlabelled examples per task per step (default 16).</summary>
    public int BatchPerTask { get; init; } = 16;
    /// <summary>Adam learning rate; null = 1e-4 for WEMoE routers, 1e-3 for AdaMerging.</summary>
    public double? LearningRate { get; init; }
    /// <summary>Seed of the batch sampling.</summary>
    public long Seed { get; init; }
    /// <summary>What is minimised (default: prediction entropy, as in the papers).</summary>
    public AdaptObjective Objective { get; init; } = AdaptObjective.Entropy;
    /// <summary>Weight of the diversity term of <see cref="AdaptObjective.EntropyDiversity"/> (default 1).</summary>
    public double DiversityWeight { get; init; } = 1.0;
    /// <summary>Device to train on (CPU when null).</summary>
    public Device? Device { get; init; }

    /// <summary>Largest learning rate accepted: Adam moves each parameter by about lr per step, and the defaults are 1e-4 and 1e-3.</summary>
    public const double MaxLearningRate = 1.0;

    /// <summary>Most steps accepted (the papers use 1,000).</summary>
    public const int MaxSteps = 1_000_000;

    /// <summary>Throws on steps outside [0, <see cref="MaxSteps"/>], a non-positive batch, or a learning rate that is not
    /// finite and in (0, <see cref="MaxLearningRate"/>]. The batch's memory bound needs the model (<see cref="AdaptInputs.CheckBatch"/>).</summary>
    public AdaptOptions Validate()
    {
        if (Steps is < 0 or > MaxSteps) throw new SettingException("steps", $"must be in 0..{MaxSteps}, got {Steps}");
        if (BatchPerTask <= 0) throw new SettingException("batch per task", $"must be positive, got {BatchPerTask}");
        if (LearningRate is { } lr && !(double.IsFinite(lr) && lr > 0 && lr <= MaxLearningRate))
            throw new SettingException("learning rate", $"must be a finite number in (0, {MaxLearningRate}], got {lr}");
        if (!(DiversityWeight >= 0) || double.IsInfinity(DiversityWeight))
            throw new SettingException("diversity weight", $"must be a finite number ≥ 0, got {DiversityWeight}");
        return this;
    }
}

/// <summary>One logged step: the summed objective and each task's mean prediction entropy.</summary>
/// <param name="Step">1-based step number.</param>
/// <param name="Loss">Σ over the tasks in the objective of each task's loss (the minimised objective).</param>
/// <param name="TaskEntropy">Mean entropy per task.</param>
/// <param name="ElapsedSeconds">Wall time since the start.</param>
public sealed record AdaptStep(int Step, double Loss, IReadOnlyDictionary<string, double> TaskEntropy, double ElapsedSeconds);

/// <summary>Result of an adaptation run.</summary>
/// <param name="Log">Every step.</param>
/// <param name="Seconds">Total wall time of the steps.</param>
/// <param name="PeakRssBytes">Peak resident memory of the process at the end (VmHWM on Linux).</param>
/// <param name="TrainedParameters">Names of the parameters that were trained.</param>
public sealed record AdaptResult(IReadOnlyList<AdaptStep> Log, double Seconds, long PeakRssBytes, IReadOnlyList<string> TrainedParameters)
{
    /// <summary>Steps per second.</summary>
    public double StepsPerSecond => Seconds > 0 ? Log.Count / Seconds : double.NaN;
}
