using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>Granularity of the learned merging coefficients.</summary>
public enum AdaMergingGranularity
{
    /// <summary>One λᵢ per task, shared by every parameter.</summary>
    TaskWise,
    /// <summary>One λ_{p,i} per parameter tensor p and task i (FusionBench's "layer-wise").</summary>
    LayerWise,
}

/// <summary>AdaMerging settings beyond <see cref="AdaptOptions"/>.</summary>
/// <param name="Granularity">Task-wise or layer-wise.</param>
/// <param name="InitLambda">Initial λ (0.3).</param>
/// <param name="Clamp">Clamp λ to [0, 1] when merging (FusionBench's default).</param>
public sealed record AdaMergingOptions(AdaMergingGranularity Granularity = AdaMergingGranularity.LayerWise, double InitLambda = 0.3, bool Clamp = true);

/// <summary>An AdaMerging result: the merged plain model and the learned coefficients.</summary>
/// <param name="Model">θ₀ + Σᵢ λᵢ τᵢ with the final λ.</param>
/// <param name="Lambdas">[1, N] (task-wise) or [P, N] (layer-wise, rows in <see cref="ParameterOrder"/>), after clamping.</param>
/// <param name="ParameterOrder">Parameter names of the rows of a layer-wise <see cref="Lambdas"/>.</param>
/// <param name="Adapt">Loss log and timing.</param>
public sealed record AdaMergingResult(ClipVisionModel Model, Tensor Lambdas, IReadOnlyList<string> ParameterOrder, AdaptResult Adapt);

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024): learns the task-arithmetic coefficients by minimising the same
/// entropy objective as WEMoE (Adam, lr 1e-3). Each step merges θ₀ + Σᵢ λᵢ τᵢ functionally (the model reads
/// the merged tensors through <see cref="FunctionalParameters"/>, so gradients reach λ).
/// </summary>
public static class AdaMerging
{
    /// <summary>Runs AdaMerging over a base and expert checkpoints; <paramref name="monitor"/> may steer the run.</summary>
    public static AdaMergingResult Run(ClipVisionConfig cfg, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts,
        IReadOnlyDictionary<string, ClassificationHead> heads, IReadOnlyList<TaskData> data, ImagePreprocess? preprocess,
        AdaptOptions options, AdaMergingOptions? adaOptions = null, Action<AdaptStep>? onStep = null,
        IAdaptMonitor? monitor = null, Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        var ada = adaOptions ?? new AdaMergingOptions();
        if (experts.Count == 0) throw new ArgumentException("AdaMerging needs at least one expert model");
        var missing = data.Where(d => !heads.ContainsKey(d.Task)).Select(d => d.Task).ToList();
        if (missing.Count > 0) throw new ArgumentException($"no head for task(s) {string.Join(", ", missing)}");
        var device = options.Device ?? CPU;
        var model = new ClipVisionModel(cfg);
        try
        {
            ClipModelFolder.LoadWeights(model, baseModel);   // validates names and shapes of the base
            model.to(device);
            foreach (var h in heads.Values) h.to(device);
            using var coefficients = new MergingCoefficients(model.ParametersByName(), experts, ada, device);
            var names = coefficients.Names;

            IReadOnlyList<Tensor> Logits(IReadOnlyList<Tensor> batches)
            {
                Tensor emb;
                using (FunctionalParameters.Use(coefficients.Merge())) emb = model.forward(torch.cat(batches.ToArray(), 0));
                return AdaptationLoop.SplitByTask(emb, batches, (t, e) => heads[data[t].Task].forward(e));
            }

            var adapt = AdaptationLoop.Run([coefficients.Lambdas], ["lambdas"], data, Logits, options, 1e-3, preprocess, onStep, monitor, teacher);
            var final = coefficients.CopyInto(model.ParametersByName());
            return new AdaMergingResult(model, final, names, adapt);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
