using MergeDsl.Core.Ops;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Execution;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe;

/// <summary>
/// Upscales a base CLIP vision model and N fine-tuned experts (same architecture, HF names) into an
/// MoE model: selected sites become MoE modules built from the base weights and the task vectors;
/// every other parameter is θ₀ + λ_rest·Σᵢ(θᵢ − θ₀).
/// </summary>
public static class Upscaler
{
    /// <summary>
    /// Builds and fills the MoE model. Sources are read tensor by tensor; nothing is modified. When
    /// <paramref name="rest"/> is given, the non-upscaled parameters come from that recipe run by the recipe
    /// compiler and executor (e.g. the library's task arithmetic, TIES, …); otherwise from task arithmetic with
    /// <see cref="UpscaleSpec.RestLambda"/>.
    /// </summary>
    public static MoeModel Upscale(ClipVisionConfig cfg, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts, UpscaleSpec spec,
        MergeRecipe? rest = null)
    {
        var moe = MoeModelBuilder.Build(cfg, spec, experts.Count);
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

    /// <summary>A float32 copy of <paramref name="name"/>, checked for presence, shape, floating dtype and finiteness.</summary>
    internal static Tensor Read(ITensorSource src, string name, long[] expectedShape)
    {
        if (!src.TryGetInfo(name, out var info))
            throw new ModelWeightsException(src.Label, [name], []);
        if (!info.Shape.SequenceEqual(expectedShape))
            throw new ModelWeightsException(src.Label, [], [$"{name} [{string.Join(",", info.Shape)}] (model expects [{string.Join(",", expectedShape)}])"]);
        if (!DTypes.IsFloatingPoint(info.DType))
            throw new ModelWeightsException(src.Label, [], [$"{name} has dtype {DTypes.ToSafetensorsName(info.DType)}, expected a floating type"]);
        using var t = src.Load(name);
        // The same input check as every static merge: a NaN in a task vector would poison every routed mix.
        FiniteCheck.Input(t, name, src.Label);
        return t.to(ScalarType.Float32, copy: true);
    }

    static void Fill(MoeModel moe, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts, MergeRecipe? rest)
    {
        var spec = moe.Spec;
        double keep = spec.EffectiveKeepFraction;
        using var _ = no_grad();

        // base weight + task vectors of one source tensor
        (Tensor Base, Tensor[] Taus) Load(string name, long[] shape)
        {
            var b = Read(baseModel, name, shape);
            var taus = experts.Select(e =>
            {
                using var x = Read(e, name, shape);
                using var tau = x - b;
                return keep >= 1.0 ? tau.clone() : MergeOps.TopK(tau, keep);
            }).ToArray();
            return (b, taus);
        }

        void Put(Parameter p, Tensor value)
        {
            p.copy_(value);
            value.Dispose();
        }

        void FillLinear(string source, ClipLinear baseLinear, IReadOnlyList<ClipLinear> expertLinears)
        {
            foreach (var local in new[] { "weight", "bias" })
            {
                var target = local == "weight" ? baseLinear.Weight : baseLinear.Bias!;
                var (b, taus) = Load($"{source}.{local}", target.shape);
                Put(target, b);
                for (int i = 0; i < taus.Length; i++)
                    Put(local == "weight" ? expertLinears[i].Weight : expertLinears[i].Bias!, taus[i]);
            }
        }

        foreach (var (path, module) in moe.Sites)
        {
            switch (module)
            {
                case WeightEnsemblingMlp m:
                    var ex = m.Experts;
                    FillLinear(path + ".fc1", m.Base.Fc1, ex.Select(e => e.Fc1).ToList());
                    FillLinear(path + ".fc2", m.Base.Fc2, ex.Select(e => e.Fc2).ToList());
                    break;
                case WeightEnsemblingLinear l:
                    FillLinear(path, l.Base, l.Experts);
                    break;
                case SmileLinear s:
                    FillSmile(path, s, baseModel, experts);
                    break;
                default:
                    throw new InvalidOperationException($"{path}: unknown MoE module {module.GetType().Name}");
            }
        }

        // everything else: the rest recipe, or task arithmetic
        FillRest(moe.Model.named_parameters(), moe.Sites.Keys, baseModel, experts, spec, rest);
    }

    /// <summary>
    /// Fills every parameter of <paramref name="parameters"/> outside the upscaled <paramref name="sites"/> (and the shared
    /// router) with the rest recipe's output, or with task arithmetic at <see cref="UpscaleSpec.RestLambda"/>.
    /// </summary>
    internal static void FillRest(IEnumerable<(string name, Parameter parameter)> parameters, IEnumerable<string> sites,
        ITensorSource baseModel, IReadOnlyList<ITensorSource> experts, UpscaleSpec spec, MergeRecipe? rest)
    {
        using var _ = no_grad();
        void Put(Parameter p, Tensor value)
        {
            p.copy_(value);
            value.Dispose();
        }
        var upscaledPrefixes = sites.Select(k => k + ".").Append(MoeModel.SharedRouterName + ".").ToList();
        var restNames = parameters
            .Where(np => !upscaledPrefixes.Any(pre => np.name.StartsWith(pre, StringComparison.Ordinal)))
            .ToList();
        if (rest is not null)
        {
            var plan = Compiler.Compile(rest, MergeInputs.Of(baseModel, [.. experts]));
            using var sink = new MemorySink();
            Executor.Run(plan, sink);
            foreach (var (name, p) in restNames)
            {
                if (!sink.Tensors.TryGetValue(name, out var t))
                    throw new ModelWeightsException($"rest recipe '{rest.Name}'", [name], []);
                if (!t.shape.SequenceEqual(p.shape))
                    throw new ModelWeightsException($"rest recipe '{rest.Name}'", [], [$"{name} [{string.Join(",", t.shape)}] (model expects [{string.Join(",", p.shape)}])"]);
                p.copy_(t);
            }
            return;
        }
        foreach (var (name, p) in restNames)
        {
            using var b = Read(baseModel, name, p.shape);
            var xs = experts.Select(e => Read(e, name, p.shape)).ToList();
            Put(p, TaskVectorOps.TaskArithmetic(b, xs, spec.RestLambda));
            foreach (var x in xs) x.Dispose();
        }
    }

    /// <summary>Fills a SMILE Linear from the source Linear at <paramref name="path"/> of the base and the experts.</summary>
    internal static void FillSmile(string path, SmileLinear s, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts)
    {
        var w0 = Read(baseModel, path + ".weight", s.Base.Weight.shape);
        var b0 = s.Base.Bias is null ? null : Read(baseModel, path + ".bias", s.Base.Bias.shape);
        s.Base.Weight.copy_(w0);
        if (b0 is not null) s.Base.Bias!.copy_(b0);
        long k = s.Experts[0].Svh.shape[0];
        long g = s.GateWeight.shape[0] / s.NumExperts;
        var gateRows = new List<Tensor>();
        for (int i = 0; i < experts.Count; i++)
        {
            using var scope = NewDisposeScope();
            var dw = (Read(experts[i], path + ".weight", w0.shape) - w0).to(ScalarType.Float64);
            var db = b0 is null ? null : Read(experts[i], path + ".bias", b0.shape) - b0;
            var (u, sv, vh) = linalg.svd(dw, fullMatrices: false);
            var e = s.Experts[i];
            e.U.copy_(u.narrow(1, 0, k));
            e.Svh.copy_(sv.narrow(0, 0, k).unsqueeze(1) * vh.narrow(0, 0, k));
            if (db is not null) e.Bias!.copy_(db);
            gateRows.Add(vh.narrow(0, 0, g).to(ScalarType.Float32).MoveToOuterDisposeScope());
        }
        s.GateWeight.copy_(torch.cat(gateRows.ToArray(), 0));
        foreach (var t in gateRows) t.Dispose();
        w0.Dispose(); b0?.Dispose();
    }
}
