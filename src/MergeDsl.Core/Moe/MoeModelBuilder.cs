using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

/// <summary>A CLIP vision model with MoE modules at some sites.</summary>
/// <param name="Model">The model (its state dict is the upscaled format).</param>
/// <param name="Spec">The recipe it was built from.</param>
/// <param name="NumExperts">Number of experts.</param>
/// <param name="Sites">The upscaled modules by path, in model order.</param>
/// <param name="SharedRouter">The router shared by all sites, or null.</param>
public sealed record MoeModel(ClipVisionModel Model, UpscaleSpec Spec, int NumExperts,
    IReadOnlyDictionary<string, nn.Module<Tensor, Tensor>> Sites, WeightEnsemblingRouter? SharedRouter)
{
    /// <summary>Name prefix of the shared router's parameters.</summary>
    public const string SharedRouterName = "shared_router";

    /// <summary>The weight-ensembling modules (those with trainable routers).</summary>
    public IEnumerable<RoutedModuleBase> RoutedModules => Sites.Values.OfType<RoutedModuleBase>();

    /// <summary>Names of the router parameters (the only trainable ones of a WEMoE model).</summary>
    public IReadOnlyList<string> RouterParameterNames()
        => Model.named_parameters().Select(p => p.name)
            .Where(n => n.StartsWith(SharedRouterName + ".", StringComparison.Ordinal) || n.Contains(".router.", StringComparison.Ordinal))
            .ToList();

    /// <summary>
    /// Forces every weight-ensembling module to use <paramref name="routes"/> ([B, N] or [1, N]) instead of its
    /// router (oracle routing: a one-hot row per sample sends it to its own task's expert); null restores routing.
    /// </summary>
    public void ForceRoutes(Tensor? routes)
    {
        foreach (var m in RoutedModules) m.ForcedRoutes = routes;
    }
}

/// <summary>Builds MoE model skeletons from an <see cref="UpscaleSpec"/> (weights are filled by upscaling or loading).</summary>
public static class MoeModelBuilder
{
    /// <summary>
    /// Builds a model whose selected sites are MoE modules: for WEMoE an MLP site becomes a
    /// <see cref="WeightEnsemblingMlp"/> and a Linear site a <see cref="WeightEnsemblingLinear"/>; for SMILE every
    /// selected Linear (an MLP site selects its fc1 and fc2) becomes a <see cref="SmileLinear"/>. Routers are
    /// initialised from <see cref="UpscaleSpec.Seed"/>.
    /// </summary>
    public static MoeModel Build(ClipVisionConfig cfg, UpscaleSpec spec, int numExperts)
    {
        spec.Validate(numExperts);
        var patterns = spec.Modules.Select(NamePattern.Parse).ToList();
        bool Selected(string path) => patterns.Any(p => p.Matches(path));
        var sites = new Dictionary<string, nn.Module<Tensor, Tensor>>(StringComparer.Ordinal);
        var options = new WeightEnsemblingOptions(spec.BatchReduce, spec.EffectiveRouting);
        // A private generator (not the global one, which parallel callers share) makes routers reproducible.
        using var rng = new Generator((ulong)spec.Seed);
        return BuildSeeded(cfg, spec, numExperts, Selected, sites, options, rng);
    }

    static MoeModel BuildSeeded(ClipVisionConfig cfg, UpscaleSpec spec, int numExperts, Func<string, bool> Selected,
        Dictionary<string, nn.Module<Tensor, Tensor>> sites, WeightEnsemblingOptions options, Generator rng)
    {
        WeightEnsemblingRouter? shared = spec.SharedRouter
            ? new WeightEnsemblingRouter(MoeModel.SharedRouterName, cfg.HiddenSize, numExperts, spec.RouterDepth, spec.InitLambda, rng)
            : null;

        nn.Module<Tensor, Tensor>? Factory(ModuleSite site)
        {
            nn.Module<Tensor, Tensor>? made;
            if (spec.Kind == MoeKind.Smile)
            {
                if (site.Role == ModuleRole.Mlp) return null;   // let the MLP offer fc1/fc2
                string parent = site.Path[..site.Path.LastIndexOf('.')];
                bool pick = Selected(site.Path) || (site.Role is ModuleRole.Fc1 or ModuleRole.Fc2 && Selected(parent));
                if (!pick) return null;
                long full = Math.Min(site.InFeatures, site.OutFeatures);
                made = new SmileLinear(site.Path, site.InFeatures, site.OutFeatures, numExperts,
                    Math.Min(spec.Rank, full), Math.Min(spec.GateRank, full), spec.EffectiveRouting);
            }
            else
            {
                if (!Selected(site.Path)) return null;
                if (shared is not null && site.InFeatures != cfg.HiddenSize)
                    throw new ArgumentException($"shared router: {site.Path} reads {site.InFeatures}-wide inputs, the shared router reads hidden_size {cfg.HiddenSize}");
                made = site.Role == ModuleRole.Mlp
                    ? new WeightEnsemblingMlp(site.Path, cfg, numExperts, spec.RouterDepth, spec.InitLambda, options, shared, rng)
                    : new WeightEnsemblingLinear(site.Path, site.InFeatures, site.OutFeatures, numExperts, spec.RouterDepth, spec.InitLambda, options, shared, rng);
            }
            sites[site.Path] = made;
            return made;
        }

        var extra = shared is null ? null : new Dictionary<string, nn.Module> { [MoeModel.SharedRouterName] = shared };
        var model = new ClipVisionModel(cfg, Factory, extra);
        if (sites.Count == 0)
        {
            model.Dispose();
            throw new ArgumentException(
                $"upscaling: modules [{string.Join(", ", spec.Modules)}] matched no module (paths look like vision_model.encoder.layers.0.mlp, vision_model.encoder.layers.0.self_attn.q_proj, vision_model.encoder.layers.0.mlp.fc1)");
        }
        return new MoeModel(model, spec, numExperts, sites, shared);
    }
}
