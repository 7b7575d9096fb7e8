using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024): merge coefficients θ₀ + Σᵢ λᵢ τᵢ learned by entropy minimisation on
/// unlabeled test data, one λ per task (task-wise) or per task and parameter tensor (layer-wise, as in
/// FusionBench); λ initialised at 0.3 and clamped to [0, 1].
/// </summary>
public static class AdaMerging
{
    /// <summary>Learns the coefficients and returns the merged parameters with the learned λ and the run's report.</summary>
    public static (Dictionary<string, Tensor> Merged, double[,] Lambdas, AdaptationReport Report) Run(
        TinyClipConfig config, IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> heads, IReadOnlyList<TaskTensors> tasks, bool layerWise,
        AdaptationSettings s, double init = 0.3, Action<string>? log = null)
    {
        // Parameters every task vector leaves at zero (frozen in fine-tuning) need no coefficient.
        var moving = pre.Keys.Where(n => taus.Any(t => t[n].abs().max().item<float>() > 0)).ToList();
        int groups = layerWise ? moving.Count : 1;
        var lambda = new Parameter(full(taus.Count, groups, init), true);
        Dictionary<string, Tensor> Merge()
        {
            var lam = lambda.clamp(0, 1);
            var p = new Dictionary<string, Tensor>(pre);
            for (int k = 0; k < moving.Count; k++)
            {
                var n = moving[k];
                var acc = pre[n];
                for (int i = 0; i < taus.Count; i++) acc = acc + lam[i, layerWise ? k : 0] * taus[i][n];
                p[n] = acc;
            }
            return p;
        }
        var report = TestTimeAdaptation.Run([lambda], (i, x) => TinyClip.Head(heads[i], TinyClip.Encode(config, Merge(), x)), tasks, s, log);
        using var _ = no_grad();
        var merged = Merge().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        var lamValues = lambda.detach().clamp(0, 1);
        var arr = new double[taus.Count, groups];
        for (int i = 0; i < taus.Count; i++) for (int k = 0; k < groups; k++) arr[i, k] = lamValues[i, k].item<float>();
        lambda.Dispose();
        return (merged, arr, report);
    }
}
