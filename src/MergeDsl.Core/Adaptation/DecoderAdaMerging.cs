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
            var names = own.Keys.ToList();
            int n = experts.Count;
            var theta0 = new Dictionary<string, Tensor>();
            var taus = new Dictionary<string, Tensor>();
            using (no_grad())
            {
                foreach (var name in names)
                {
                    var p = own[name];
                    var b = p.detach().clone();
                    theta0[name] = b;
                    var stack = experts.Select(e =>
                    {
                        if (!e.TryGetInfo(name, out var info)) throw new ModelWeightsException(e.Label, [name], []);
                        if (!info.Shape.SequenceEqual(p.shape))
                            throw new ModelWeightsException(e.Label, [], [$"{name} [{string.Join(",", info.Shape)}] (model expects [{string.Join(",", p.shape)}])"]);
                        using var x = e.Load(name);
                        return (x.to(ScalarType.Float32).to(device) - b).reshape(-1);
                    }).ToArray();
                    taus[name] = torch.stack(stack, 0);   // [N, numel]
                    foreach (var s in stack) s.Dispose();
                }
            }
            foreach (var p in model.parameters()) p.requires_grad = false;
            long rows = ada.Granularity == AdaMergingGranularity.TaskWise ? 1 : names.Count;
            var lambdas = new Parameter(ScalarArgs.Full([rows, n], ada.InitLambda, ScalarType.Float32, device), true);

            Dictionary<string, Tensor> Merge()
            {
                var lam = ada.Clamp ? lambdas.ClampTo(0.0, 1.0) : (Tensor)lambdas;
                var merged = new Dictionary<string, Tensor>(names.Count);
                for (int i = 0; i < names.Count; i++)
                {
                    var row = lam[ada.Granularity == AdaMergingGranularity.TaskWise ? 0 : i].unsqueeze(0);   // [1, N]
                    var b = theta0[names[i]];
                    merged[names[i]] = b.Plus(row.matmul(taus[names[i]]).view(b.shape));
                }
                return merged;
            }

            IReadOnlyList<Tensor> Logits(IReadOnlyList<Tensor> batches)
            {
                using (FunctionalParameters.Use(Merge())) return DecoderLm.PerTask(model, batches);
            }

            var adapt = AdaptationLoop.RunBatches([lambdas], ["lambdas"], data.Select(d => d.Task).ToList(), windows.Next, Logits,
                options, 1e-3, onStep, monitor, teacher);
            Tensor final;
            using (no_grad())
            {
                using var scope = NewDisposeScope();
                foreach (var (name, t) in Merge()) own[name].copy_(t);
                final = (ada.Clamp ? lambdas.ClampTo(0.0, 1.0) : lambdas).detach().cpu().clone().MoveToOuterDisposeScope();
            }
            foreach (var t in theta0.Values.Concat(taus.Values)) t.Dispose();
            lambdas.Dispose();
            return new DecoderAdaMergingResult(model, final, names, adapt);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
