using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

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
