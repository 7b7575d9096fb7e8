using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Moe;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// SMILE on the text pool: training-free; each decoder MLP projection becomes the base plus rank-k SVD experts of the
/// task vectors with a top-1 gate from the experts' leading right singular vectors (gate rank 4), routing every
/// token by its own input. The other parameters are task arithmetic with λ. Rank and λ are chosen on validation text.
/// </summary>
/// <param name="Ranks">Expert ranks to choose among.</param>
/// <param name="Lambdas">Rest-recipe λ to choose among.</param>
public sealed record SmileTextRow(IReadOnlyList<double> Ranks, IReadOnlyList<double> Lambdas) : ITextRowProducer
{
    /// <inheritdoc/>
    public string Method => "SMILE";

    /// <inheritdoc/>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Grid => TextRowSources.Grid(("rank", Ranks), ("lambda", Lambdas));

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Fixed => new Dictionary<string, string>
    {
        ["gate_rank"] = "4", ["top_k"] = "1", ["upscaled"] = "gate/up/down projections of every decoder MLP, routed per token",
    };

    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting)
    {
        using var sources = new TextRowSources(inputs);
        double lambda = TextRowSources.Number(setting, "lambda");
        var spec = new UpscaleSpec
        {
            Kind = MoeKind.Smile, Modules = ["*.mlp"], Rank = (int)TextRowSources.Number(setting, "rank"), GateRank = 4,
            RestLambda = lambda, Seed = inputs.Seed + 11, ExpertNames = inputs.ExpertDomains,
        };
        return DecoderUpscaler.Upscale(sources.Config, sources.Base, sources.Experts, spec).Model;
    }
}
