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

    /// <summary>Defaults.</summary>
    public static CompileOptions Default { get; } = new();
}
