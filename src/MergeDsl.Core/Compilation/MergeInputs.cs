using MergeDsl.Core.Checkpoints;

namespace MergeDsl.Core.Compilation;

/// <summary>An input model with the label recipes and error messages use for it.</summary>
/// <param name="Label">The label recipes and messages use.</param>
/// <param name="Source">Where the tensors come from.</param>
public sealed record NamedSource(string Label, ITensorSource Source)
{
    /// <summary>Labels a source by its own label.</summary>
    public static NamedSource Of(ITensorSource source) => new(source.Label, source);
}

/// <summary>The models a merge reads: an optional base (θ₀) and the experts, in order.</summary>
/// <param name="Base">The base model θ₀, if the merge has one.</param>
/// <param name="Experts">The fine-tuned models, in order.</param>
public sealed record MergeInputs(NamedSource? Base, IReadOnlyList<NamedSource> Experts)
{
    /// <summary>Inputs labelled by their sources' own labels.</summary>
    public static MergeInputs Of(ITensorSource? baseModel, params ITensorSource[] experts) =>
        new(baseModel is null ? null : NamedSource.Of(baseModel), experts.Select(NamedSource.Of).ToArray());
}
