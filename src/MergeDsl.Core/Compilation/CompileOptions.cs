using MergeDsl.Core.Checkpoints;

namespace MergeDsl.Core.Compilation;

/// <summary>Options that shape the plan.</summary>
public sealed record CompileOptions
{
    /// <summary>Dtype of merged (floating-point) outputs; null keeps the reference model's dtype per tensor.</summary>
    public DType? OutputDType { get; init; }

    /// <summary>
    /// Non-floating-point tensors (integer, bool, F8) of the reference model (the base, else the first
    /// expert) are copied from it unchanged, whatever rule matches (default). When false they are an error.
    /// </summary>
    public bool CopyNonFloat { get; init; } = true;

    /// <summary>
    /// A tensor of the base that some expert lacks is copied from the base (as a top-level passthrough
    /// would) instead of being an error. Needs a base. A tensor the base lacks stays an error: there is
    /// nothing to take. Off by default: a model missing a tensor is usually the wrong model.
    /// </summary>
    public bool TakeMissingFromBase { get; init; }

    /// <summary>Defaults.</summary>
    public static CompileOptions Default { get; } = new();
}
