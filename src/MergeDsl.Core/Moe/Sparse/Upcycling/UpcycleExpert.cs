namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// One expert of an upcycle (an entry of mergekit-moe's <c>experts</c> or <c>shared_experts</c>): a dense model whose
/// MLPs become this expert's weights in every layer.
/// </summary>
/// <param name="SourceModel">The dense model folder (resolved: a local folder or a snapshot in the hub cache).</param>
/// <param name="PositivePrompts">Texts this expert should receive (its router row points towards them).</param>
/// <param name="NegativePrompts">Texts it should not receive (subtracted from its router row); may be empty.</param>
/// <param name="NoiseScale">When set, N(0, NoiseScale²) noise (seeded per tensor) is added to each of its MLP weights.</param>
/// <param name="ResidualScale">When set, its down projection is multiplied by this (so its output is scaled).</param>
public sealed record UpcycleExpert(
    string SourceModel,
    IReadOnlyList<string> PositivePrompts,
    IReadOnlyList<string> NegativePrompts,
    double? NoiseScale = null,
    double? ResidualScale = null)
{
    /// <summary>An expert without prompts or scaling (for the random gate modes).</summary>
    public static UpcycleExpert Of(string sourceModel) => new(sourceModel, [], []);
}
