using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>What test-time adaptation minimises for each task's unlabelled batch (summed over tasks).</summary>
public enum AdaptObjective
{
    /// <summary>Mean prediction entropy (Tent, AdaMerging, WEMoE): confident predictions.</summary>
    Entropy,
    /// <summary>
    /// Mean prediction entropy minus the entropy of the batch's mean prediction (information maximisation, as in
    /// SHOT): confident predictions that stay spread over the classes, so a task cannot lower its loss by
    /// predicting one class for everything.
    /// </summary>
    EntropyDiversity,
    /// <summary>
    /// Mean cross-entropy against the task's labels. Not test-time adaptation: it needs labelled data, and serves
    /// as a diagnostic, e.g. how far routers trained with labels get compared with a label-free objective.
    /// </summary>
    Supervised,
    /// <summary>
    /// Mean KL divergence KL(p_teacher ‖ p) from each task's teacher (its fine-tuned expert) on the same unlabelled
    /// images: label-free like entropy, but it asks the merged model to answer as the task's own expert would,
    /// not merely confidently.
    /// </summary>
    Distillation,
}

/// <summary>The test-time objectives over one task's logits [B, C].</summary>
public static class EntropyObjective
{
    /// <summary>Reads an objective's name (<c>entropy</c>, <c>entropy-diversity</c>, <c>distillation</c>, <c>supervised</c>).</summary>
    public static AdaptObjective Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "entropy" => AdaptObjective.Entropy,
        "entropy-diversity" => AdaptObjective.EntropyDiversity,
        "supervised" => AdaptObjective.Supervised,
        "distillation" => AdaptObjective.Distillation,
        _ => throw new SettingException("objective", $"expected entropy, entropy-diversity, distillation or supervised, got '{text}'"),
    };

    /// <summary>The command-line name of an objective (the inverse of <see cref="Parse"/>).</summary>
    public static string Name(AdaptObjective objective) => objective switch
    {
        AdaptObjective.Entropy => "entropy",
        AdaptObjective.EntropyDiversity => "entropy-diversity",
        AdaptObjective.Supervised => "supervised",
        AdaptObjective.Distillation => "distillation",
        _ => throw new ArgumentOutOfRangeException(nameof(objective), objective, null),
    };

    /// <summary>
    /// The loss <paramref name="objective"/> assigns to one task's logits [B, C]; <paramref name="labels"/> [B]
    /// are read only by <see cref="AdaptObjective.Supervised"/> and <paramref name="teacherLogits"/> [B, C] only by
    /// <see cref="AdaptObjective.Distillation"/>, which require them.
    /// </summary>
    public static Tensor Loss(AdaptObjective objective, Tensor logits, double diversityWeight = 1.0, Tensor? labels = null,
        Tensor? teacherLogits = null) => objective switch
    {
        AdaptObjective.Distillation => Kl(teacherLogits ?? throw new ArgumentException("the distillation objective needs a teacher"), logits),
        AdaptObjective.Entropy => MeanEntropy(logits),
        AdaptObjective.EntropyDiversity => MeanEntropy(logits) - MarginalEntropy(logits) * diversityWeight,
        AdaptObjective.Supervised => nn.functional.cross_entropy(logits,
            labels ?? throw new ArgumentException("the supervised objective needs labels")),
        _ => throw new ArgumentOutOfRangeException(nameof(objective), objective, null),
    };

    /// <summary>Mean over rows of KL(softmax(teacher) ‖ softmax(student)).</summary>
    public static Tensor Kl(Tensor teacherLogits, Tensor studentLogits)
    {
        var logT = nn.functional.log_softmax(teacherLogits, -1);
        var logS = nn.functional.log_softmax(studentLogits, -1);
        return (logT.exp() * (logT - logS)).sum(-1).mean();
    }

    /// <summary>Entropy of the batch's mean prediction: log C when the batch's predictions cover all classes evenly, 0 when all agree.</summary>
    public static Tensor MarginalEntropy(Tensor logits)
    {
        var mean = nn.functional.softmax(logits, -1).mean([0]);
        return -(mean * mean.clamp_min(1e-12).log()).sum();
    }

    /// <summary>Mean entropy −Σ p log p over the rows of <paramref name="logits"/> [B, C].</summary>
    public static Tensor MeanEntropy(Tensor logits)
    {
        var logp = nn.functional.log_softmax(logits, -1);
        return -(logp.exp() * logp).sum(-1).mean();
    }
}
