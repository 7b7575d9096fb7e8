using MergeDsl.Core.Adaptation;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// One adaptive row of the benchmark: the core loop's options (steps, learning rate, batch, seed, objective)
/// and the collapse guard that watches it.
/// </summary>
public sealed record AdaptationSettings
{
    /// <summary>What the core adaptation loop runs with.</summary>
    public AdaptOptions Options { get; init; } = new();
    /// <summary>Steps between collapse checks.</summary>
    public int CheckEvery { get; init; } = 50;
    /// <summary>Unlabeled test images per task in the fixed probe batch the collapse check reads.</summary>
    public int ProbeImages { get; init; } = 256;
    /// <summary>
    /// The guard fires when a task's prediction-histogram entropy falls below this fraction of its value
    /// before adaptation (predictions piling onto few classes).
    /// </summary>
    public double CollapseRatio { get; init; } = 0.6;
}
