using MergeDsl.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Evaluation;

/// <summary>One task's images (and labels when labelled), held in CPU memory.</summary>
/// <param name="Task">Task name (the file name without extension; matches a head).</param>
/// <param name="Images">[N, C, H, W] F32 (model-ready pixel values) or U8 (preprocessed by the model's settings).</param>
/// <param name="Labels">[N] I64 class indices, or null for unlabelled data.</param>
public sealed record TaskData(string Task, Tensor Images, Tensor? Labels) : IDisposable
{
    /// <summary>Number of examples.</summary>
    public long Count => Images.shape[0];

    /// <inheritdoc/>
    public void Dispose()
    {
        Images.Dispose();
        Labels?.Dispose();
    }
}
