using MergeDsl.Core.Models.Decoder;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// The teachers of <see cref="AdaptObjective.Distillation"/> for language models: for task i, expert i's next-token
/// distributions on task i's own windows. The objective is this project's (not the WEMoE paper's label-free one): it
/// uses the task identity of every batch and the experts' predictions. Owns (and disposes) the models.
/// </summary>
public sealed class DecoderExpertTeachers : IDisposable
{
    readonly IReadOnlyList<DecoderModel> models;

    /// <summary>One expert per task, in the order of the adaptation's task data.</summary>
    public DecoderExpertTeachers(IReadOnlyList<DecoderModel> models)
    {
        if (models.Count == 0) throw new ArgumentException("distillation needs one expert per task");
        this.models = models;
    }

    /// <summary>Task <paramref name="task"/>'s expert next-token logits rows [B·(L−1), vocab] for windows [B, L].</summary>
    public Tensor Predict(int task, Tensor ids)
    {
        using var _ = no_grad();
        return DecoderLm.NextTokenLogits(models[task], ids);
    }

    /// <summary>The form the adaptation loops take a teacher in.</summary>
    public Func<int, Tensor, Tensor> AsFunction() => Predict;

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var m in models) m.Dispose();
    }
}
