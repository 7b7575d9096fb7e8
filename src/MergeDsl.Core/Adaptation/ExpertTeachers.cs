using MergeDsl.Core.Models;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// The teachers of <see cref="AdaptObjective.Distillation"/>: for task i, expert i's model scored with task i's
/// head. Owns (and disposes) the models; the heads belong to the caller.
/// </summary>
public sealed class ExpertTeachers : IDisposable
{
    readonly IReadOnlyList<ClipVisionModel> models;
    readonly IReadOnlyList<ClassificationHead> heads;

    /// <summary>One model and one head per task, in the order of the adaptation's task data.</summary>
    public ExpertTeachers(IReadOnlyList<ClipVisionModel> models, IReadOnlyList<ClassificationHead> heads)
    {
        if (models.Count != heads.Count)
            throw new ArgumentException($"{models.Count} teacher models for {heads.Count} task heads");
        this.models = models;
        this.heads = heads;
    }

    /// <summary>Task <paramref name="task"/>'s expert logits for model-ready <paramref name="pixels"/>.</summary>
    public Tensor Predict(int task, Tensor pixels) => heads[task].forward(models[task].forward(pixels));

    /// <summary>The form the adaptation loops take a teacher in.</summary>
    public Func<int, Tensor, Tensor> AsFunction() => Predict;

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var m in models) m.Dispose();
    }
}
