using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Next-token predictions as the adaptation objectives read them: for a window [B, L], the logits at positions
/// 0..L−2 (each predicts the token after it), flattened to rows [B·(L−1), vocab].
/// </summary>
public static class DecoderLm
{
    /// <summary>Rows of next-token logits of <paramref name="model"/> for windows <paramref name="ids"/> [B, L].</summary>
    public static Tensor NextTokenLogits(DecoderModel model, Tensor ids)
    {
        long l = ids.shape[1];
        var logits = model.Forward(ids);
        return logits.narrow(1, 0, l - 1).reshape(-1, logits.shape[2]);
    }

    /// <summary>
    /// Per-task rows for one window batch per task, computed in one forward pass over the concatenated windows
    /// (valid because every route of a decoder MoE is per token: no window sees another).
    /// </summary>
    public static IReadOnlyList<Tensor> PerTask(DecoderModel model, IReadOnlyList<Tensor> batches)
    {
        var logits = model.Forward(torch.cat(batches.ToArray(), 0));
        long l = logits.shape[1], v = logits.shape[2];
        return AdaptationLoop.SplitByTask(logits, batches, (_, x) => x.narrow(1, 0, l - 1).reshape(-1, v));
    }

    /// <summary>
    /// The value of <paramref name="objective"/> summed over tasks for fixed windows (one batch per task), without gradients:
    /// the number an adaptation should lower, measured on held windows. Supervised reads the windows' own next tokens;
    /// distillation needs <paramref name="teacher"/>.
    /// </summary>
    public static double Objective(DecoderModel model, IReadOnlyList<Tensor> batches, AdaptObjective objective,
        Func<int, Tensor, Tensor>? teacher = null, double diversityWeight = 1.0)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        var rows = PerTask(model, batches);
        double total = 0;
        for (int t = 0; t < rows.Count; t++)
        {
            long l = batches[t].shape[1];
            var labels = batches[t].narrow(1, 1, l - 1).reshape(-1);
            var teacherLogits = objective == AdaptObjective.Distillation
                ? (teacher ?? throw new ArgumentException("the distillation objective needs the experts (teachers)"))(t, batches[t])
                : null;
            total += EntropyObjective.Loss(objective, rows[t], diversityWeight, labels, teacherLogits).item<float>();
        }
        return total;
    }
}
