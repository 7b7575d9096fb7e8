using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models;

/// <summary>
/// A task's frozen classification head over the image embedding, CLIP zero-shot style:
/// logits = s · (e / ‖e‖) · Wᵀ with W [classes, projection_dim] (rows are normally the normalised
/// class-name text embeddings, or any trained rows) and logit scale s (CLIP: 100).
/// Stored as <c>heads/&lt;task&gt;.safetensors</c> beside the encoder with tensors <c>weight</c>
/// [classes, projection_dim] and <c>logit_scale</c> [] (see docs/moe.md).
/// </summary>
public sealed class ClassificationHead : nn.Module<Tensor, Tensor>
{
    /// <summary>Class rows [classes, projection_dim]; frozen.</summary>
    public Parameter Weight { get; }
    /// <summary>The logit scale s.</summary>
    public float LogitScale { get; }
    /// <summary>Task name.</summary>
    public string Task { get; }

    /// <summary>Wraps a copy of <paramref name="weight"/>.</summary>
    public ClassificationHead(string task, Tensor weight, float logitScale = 100f) : base("head_" + task)
    {
        if (weight.dim() != 2) throw new ArgumentException($"head '{task}': weight must be [classes, projection_dim], got [{string.Join(",", weight.shape)}]");
        Task = task;
        LogitScale = logitScale;
        using (no_grad()) Weight = new Parameter(weight.detach().to(ScalarType.Float32).clone(), false);
        register_parameter("weight", Weight);
    }

    /// <summary>Number of classes.</summary>
    public long NumClasses => Weight.shape[0];

    /// <summary>Logits [B, classes] from image embeddings [B, projection_dim].</summary>
    public override Tensor forward(Tensor embeddings)
        => nn.functional.normalize(embeddings, p: 2, dim: -1).matmul(Weight.t()).Times(LogitScale);
}
