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
