using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Ops;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

/// <summary>
/// Upscales a base Llama/Mistral/Qwen2 decoder and N fine-tuned experts (same configuration, HF names) into a
/// <see cref="DecoderMoeModel"/>: selected MLPs become MoE modules built from the base weights and the task vectors,
/// every other parameter is merged by the rest recipe (default θ₀ + λ_rest·Σᵢ(θᵢ − θ₀)).
/// </summary>
public static class DecoderUpscaler
{
    /// <summary>
    /// Builds and fills the MoE decoder from tensor sources (checkpoints or <see cref="InMemorySource"/>); nothing is
    /// modified. Missing, mis-shaped, non-float or non-finite tensors raise <see cref="ModelWeightsException"/> naming them.
    /// </summary>
    public static DecoderMoeModel Upscale(DecoderConfig cfg, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts,
        UpscaleSpec spec, MergeRecipe? rest = null)
    {
        if (experts.Count == 0) throw new ArgumentException("upscaling needs at least one expert model");
        var moe = DecoderMoeBuilder.Build(cfg, spec, experts.Count, baseModel.Label);
        try
        {
            Fill(moe, baseModel, experts, rest);
            return moe;
        }
        catch
        {
            moe.Model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Upscales in-memory models (e.g. a benchmark's freshly trained experts): each must have the base's configuration.
    /// The models are only read.
    /// </summary>
    public static DecoderMoeModel Upscale(DecoderModel baseModel, IReadOnlyList<DecoderModel> experts, UpscaleSpec spec, MergeRecipe? rest = null)
    {
        for (int i = 0; i < experts.Count; i++)
            if (experts[i].Config != baseModel.Config)
                throw new ArgumentException($"expert {i} ({experts[i].Label}): its configuration differs from the base model's ({baseModel.Label})");
        var states = experts.Select(e => e.StateTensors()).Prepend(baseModel.StateTensors()).ToList();
        try
        {
            using var b = new InMemorySource(baseModel.Label, states[0]);
            var xs = experts.Select((e, i) => new InMemorySource(e.Label, states[i + 1])).ToList();
            try { return Upscale(baseModel.Config, b, xs, spec, rest); }
            finally { foreach (var x in xs) x.Dispose(); }
        }
        finally
        {
            foreach (var s in states)
                foreach (var t in s.Values) t.Dispose();
        }
    }

    static void Fill(DecoderMoeModel moe, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts, MergeRecipe? rest)
    {
        double keep = moe.Spec.EffectiveKeepFraction;
        using var _ = no_grad();

        void FillLinear(string source, ClipLinear target, IReadOnlyList<ClipLinear> expertLinears)
        {
            foreach (var (local, param, expertParam) in new (string, Parameter?, Func<ClipLinear, Parameter?>)[]
                     { ("weight", target.Weight, l => l.Weight), ("bias", target.Bias, l => l.Bias) })
            {
                if (param is null) continue;
                using var b = Upscaler.Read(baseModel, $"{source}.{local}", param.shape);
                param.copy_(b);
                for (int i = 0; i < experts.Count; i++)
                {
                    using var x = Upscaler.Read(experts[i], $"{source}.{local}", param.shape);
                    using var tau = x - b;
                    using var kept = keep >= 1.0 ? tau.alias() : MergeOps.TopK(tau, keep);
                    expertParam(expertLinears[i])!.copy_(kept);
                }
            }
        }

        foreach (var (path, module) in moe.Sites)
        {
            switch (module)
            {
                case WeightEnsemblingSwiGlu m:
                    var ex = m.Experts;
                    FillLinear(path + ".gate_proj", m.Base.Gate, ex.Select(e => e.Gate).ToList());
                    FillLinear(path + ".up_proj", m.Base.Up, ex.Select(e => e.Up).ToList());
                    FillLinear(path + ".down_proj", m.Base.Down, ex.Select(e => e.Down).ToList());
                    break;
                case SmileLinear s:
                    Upscaler.FillSmile(path, s, baseModel, experts);
                    break;
                default:
                    throw new InvalidOperationException($"{path}: unknown MoE module {module.GetType().Name}");
            }
        }
        Upscaler.FillRest(moe.Model.named_parameters(), moe.Sites.Keys, baseModel, experts, moe.Spec, rest);
    }
}
