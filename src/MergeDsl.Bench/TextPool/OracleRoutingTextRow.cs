using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Moe;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// Oracle routing, a bound rather than a merging method: the unadapted WEMoE model (every decoder MLP upscaled,
/// other parameters task arithmetic with λ) whose routes are forced, for a held-in domain's text, one-hot to that
/// domain's own expert at every position. Its MLPs are then exactly the expert's; only the non-MLP parameters
/// (attention, norms, embeddings: merged) differ from the expert. A held-out domain has no expert of its own; there
/// the oracle routes one-hot to the expert whose route scores best on that domain's <b>validation</b> text (as the
/// Individual row picks its held-out expert). λ is chosen on held-in validation text under oracle routes.
/// </summary>
/// <param name="Lambdas">Rest-recipe λ to choose among.</param>
public sealed record OracleRoutingTextRow(IReadOnlyList<double> Lambdas) : ITextRowProducer
{
    /// <inheritdoc/>
    public string Method => "Oracle routing";

    /// <inheritdoc/>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Grid => TextRowSources.Grid(("lambda", Lambdas));

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Fixed => new Dictionary<string, string>
    {
        ["routing"] = "held-in: one-hot to the domain's own expert MLPs at every position; held-out: to the expert best on that domain's validation text",
        ["non_mlp_parameters"] = "task arithmetic with lambda",
    };

    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting)
    {
        using var sources = new TextRowSources(inputs);
        double lambda = TextRowSources.Number(setting, "lambda");
        var spec = new UpscaleSpec
        {
            Kind = MoeKind.WeMoE, Modules = ["*.mlp"], RouterDepth = 2, InitLambda = lambda, RestLambda = lambda, Seed = inputs.Seed + 11,
            ExpertNames = inputs.ExpertDomains,
        };
        return DecoderUpscaler.Upscale(sources.Config, sources.Base, sources.Experts, spec).Model;
    }

    /// <summary>Forces every routed module of <paramref name="model"/> one-hot to expert <paramref name="expert"/>.</summary>
    public static void Route(DecoderModel model, int expert)
    {
        var routed = model.modules().OfType<IRoutedModule>().ToList();
        if (routed.Count == 0) throw new ArgumentException($"{model.Label}: no routed modules to force");
        int n = routed[0].NumExperts;
        foreach (var m in routed)
        {
            m.ForcedRoutes?.Dispose();
            using var id = tensor(new long[] { expert });
            m.ForcedRoutes = nn.functional.one_hot(id, n).to_type(ScalarType.Float32).DetachFromDisposeScope();
        }
    }

    /// <inheritdoc/>
    public void ForDomain(DecoderModel model, TextRowInputs inputs, string domain)
    {
        int own = inputs.ExpertDomains.ToList().IndexOf(domain);
        if (own < 0)
        {
            var validation = inputs.Data[domain].Validation;
            int ctx = model.Config.MaxPositionEmbeddings;
            own = Enumerable.Range(0, inputs.ExpertDomains.Count).MinBy(e =>
            {
                Route(model, e);
                return TextScore.Of(model, validation, ctx).BitsPerByte;
            });
        }
        Route(model, own);
    }
}
