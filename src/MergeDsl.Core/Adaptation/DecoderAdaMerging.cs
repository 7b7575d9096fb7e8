using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>A decoder AdaMerging result: the merged plain decoder and the learned coefficients.</summary>
/// <param name="Model">θ₀ + Σᵢ λᵢ τᵢ with the final λ.</param>
/// <param name="Lambdas">[1, N] (task-wise) or [P, N] (layer-wise, rows in <see cref="ParameterOrder"/>), after clamping.</param>
/// <param name="ParameterOrder">Parameter names of the rows of a layer-wise <see cref="Lambdas"/>.</param>
/// <param name="Adapt">Loss log and timing.</param>
public sealed record DecoderAdaMergingResult(DecoderModel Model, Tensor Lambdas, IReadOnlyList<string> ParameterOrder, AdaptResult Adapt);

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024) on Llama-family decoders: learns task-arithmetic coefficients (one per task, or
/// one per parameter tensor and task: "layer-wise") by minimising a language-model objective over next-token
/// predictions of each task's windows (default: entropy, as the paper; Adam, lr 1e-3). The model reads
/// θ₀ + Σᵢ λᵢ τᵢ through <see cref="FunctionalParameters"/>, so gradients reach λ.
/// </summary>
public static class DecoderAdaMerging
{
    /// <summary>Runs AdaMerging over a base and expert checkpoints (any <see cref="ITensorSource"/>, e.g. <see cref="InMemorySource"/>).</summary>
    public static DecoderAdaMergingResult Run(DecoderConfig cfg, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts,
        IReadOnlyList<TextTaskData> data, int sequenceLength, AdaptOptions options, AdaMergingOptions? adaOptions = null,
        Action<AdaptStep>? onStep = null, IAdaptMonitor? monitor = null, Func<int, Tensor, Tensor>? teacher = null)
    {
        options.Validate();
        var ada = adaOptions ?? new AdaMergingOptions();
        if (experts.Count == 0) throw new ArgumentException("AdaMerging needs at least one expert model");
        if (sequenceLength > cfg.MaxPositionEmbeddings)
            throw new SettingException("sequence length", $"{sequenceLength} is longer than max_position_embeddings {cfg.MaxPositionEmbeddings}");
        var device = options.Device ?? CPU;
        var windows = new TokenWindows(data, options.BatchPerTask, sequenceLength, options.Seed, device);
        var model = new DecoderModel(cfg, baseModel.Label);
        try
        {
            model.LoadWeights(baseModel.Tensors.Select(t => t.Name), n => baseModel.TryGetInfo(n, out var info) ? info.Shape : null,
                baseModel.Load, baseModel.Label);
            model.to(device);
            var own = model.ParametersByName();
            using var coefficients = new MergingCoefficients(own, experts, ada, device);
            var names = coefficients.Names;

            IReadOnlyList<Tensor> Logits(IReadOnlyList<Tensor> batches)
            {
                using (FunctionalParameters.Use(coefficients.Merge())) return DecoderLm.PerTask(model, batches);
            }

            var adapt = AdaptationLoop.RunBatches([coefficients.Lambdas], ["lambdas"], data.Select(d => d.Task).ToList(), windows.Next, Logits,
                options, 1e-3, onStep, monitor, teacher);
            var final = coefficients.CopyInto(own);
            return new DecoderAdaMergingResult(model, final, names, adapt);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
