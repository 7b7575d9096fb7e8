using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

/// <summary>A Llama-family decoder with MoE modules at some MLP sites (the decoder counterpart of <see cref="MoeModel"/>).</summary>
/// <param name="Model">The decoder (its state dict is the upscaled format; scoring and generation run on it unchanged).</param>
/// <param name="Spec">The recipe it was built from.</param>
/// <param name="NumExperts">Number of experts.</param>
/// <param name="Sites">The upscaled modules by path (<c>model.layers.N.mlp</c> for WEMoE, <c>….mlp.gate_proj</c> etc. for SMILE), in model order.</param>
/// <param name="SharedRouter">The router shared by all sites, or null.</param>
public sealed record DecoderMoeModel(DecoderModel Model, UpscaleSpec Spec, int NumExperts,
    IReadOnlyDictionary<string, nn.Module<Tensor, Tensor>> Sites, WeightEnsemblingRouter? SharedRouter)
{
    /// <summary>The weight-ensembling modules (those with trainable routers).</summary>
    public IEnumerable<WeightEnsemblingSwiGlu> RoutedModules => Sites.Values.OfType<WeightEnsemblingSwiGlu>();

    /// <summary>Names of the router parameters (the only trainable ones of a WEMoE model).</summary>
    public IReadOnlyList<string> RouterParameterNames()
        => Model.named_parameters().Select(p => p.name)
            .Where(n => n.StartsWith(MoeModel.SharedRouterName + ".", StringComparison.Ordinal) || n.Contains(".router.", StringComparison.Ordinal))
            .ToList();

    /// <summary>
    /// Forces every weight-ensembling module to use <paramref name="routes"/> ([B, N] or [1, N], applied at every
    /// position) instead of its router, e.g. a one-hot row per sequence for oracle routing; null restores routing.
    /// </summary>
    public void ForceRoutes(Tensor? routes)
    {
        foreach (var m in RoutedModules) m.ForcedRoutes = routes;
    }
}

/// <summary>Builds decoder MoE skeletons from an <see cref="UpscaleSpec"/> (weights are filled by upscaling or loading).</summary>
public static class DecoderMoeBuilder
{
    /// <summary>Projections of a decoder MLP, in HF order.</summary>
    public static readonly IReadOnlyList<string> Projections = ["gate_proj", "up_proj", "down_proj"];

    /// <summary>
    /// Builds a decoder whose selected MLPs are MoE modules. Sites a pattern can select:
    /// <c>model.layers.N.mlp</c> (WEMoE and E-WEMoE: a <see cref="WeightEnsemblingSwiGlu"/>; SMILE: all three
    /// projections become <see cref="SmileLinear"/>s) and, for SMILE only, <c>model.layers.N.mlp.{gate,up,down}_proj</c>.
    /// A pattern that selects none of them (e.g. an attention projection) is an error naming it.
    /// </summary>
    public static DecoderMoeModel Build(DecoderConfig cfg, UpscaleSpec spec, int numExperts, string label = "decoder moe")
    {
        spec.Validate(numExperts);
        if (spec.BatchReduce)
            throw new ArgumentException("batch-reduce: decoders route per token (a route shared by a batch would let each position see later tokens)");
        var patterns = spec.Modules.Select(m => (Text: m, Pattern: NamePattern.Parse(m))).ToList();
        bool smile = spec.Kind == MoeKind.Smile;
        var candidates = Enumerable.Range(0, cfg.NumHiddenLayers).SelectMany(i =>
        {
            string mlp = $"model.layers.{i}.mlp";
            return smile ? Projections.Select(p => $"{mlp}.{p}").Prepend(mlp) : [mlp];
        }).ToList();
        foreach (var (text, pattern) in patterns)
            if (!candidates.Any(pattern.Matches))
                throw new ArgumentException(
                    $"upscaling: module pattern '{text}' matches no upscalable decoder module ({(smile ? "SMILE: model.layers.N.mlp or model.layers.N.mlp.gate_proj/up_proj/down_proj" : "WEMoE: model.layers.N.mlp")})");
        bool Selected(string path) => patterns.Any(p => p.Pattern.Matches(path));

        var sites = new Dictionary<string, nn.Module<Tensor, Tensor>>(StringComparer.Ordinal);
        var options = new WeightEnsemblingOptions(false, spec.EffectiveRouting);
        using var rng = new Generator((ulong)spec.Seed);
        WeightEnsemblingRouter? shared = spec.SharedRouter
            ? new WeightEnsemblingRouter(MoeModel.SharedRouterName, cfg.HiddenSize, numExperts, spec.RouterDepth, spec.InitLambda, rng)
            : null;

        DecoderMlp Factory(string layerName, int index, DecoderConfig c)
        {
            string mlp = layerName + ".mlp";
            if (!smile)
            {
                if (!Selected(mlp)) return DecoderMlps.Dense(layerName, index, c);
                var we = new WeightEnsemblingSwiGlu(mlp, c, numExperts, spec.RouterDepth, spec.InitLambda, options, shared, rng);
                sites[mlp] = we;
                return we;
            }
            bool whole = Selected(mlp);
            if (!whole && !Projections.Any(p => Selected($"{mlp}.{p}"))) return DecoderMlps.Dense(layerName, index, c);
            nn.Module<Tensor, Tensor> Projection(string local, long inF, long outF)
            {
                string path = $"{mlp}.{local}";
                if (!whole && !Selected(path)) return new ClipLinear(path, inF, outF, c.MlpBias);
                long full = Math.Min(inF, outF);
                var s = new SmileLinear(path, inF, outF, numExperts, Math.Min(spec.Rank, full), Math.Min(spec.GateRank, full),
                    spec.EffectiveRouting, c.MlpBias);
                sites[path] = s;
                return s;
            }
            return new ComposedSwiGlu(mlp,
                Projection("gate_proj", c.HiddenSize, c.IntermediateSize),
                Projection("up_proj", c.HiddenSize, c.IntermediateSize),
                Projection("down_proj", c.IntermediateSize, c.HiddenSize));
        }

        var extra = shared is null ? null : new Dictionary<string, nn.Module> { [MoeModel.SharedRouterName] = shared };
        var model = new DecoderModel(cfg, label, Factory, extra);
        return new DecoderMoeModel(model, spec, numExperts, sites, shared);
    }
}
