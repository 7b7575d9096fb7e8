using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// AdaMerging's learnable state for any model: θ₀ and the stacked task vectors τ of every parameter, and the
/// coefficients λ ([1, N] task-wise or [P, N] layer-wise). CLIP and decoder AdaMerging share it; only how a
/// model is run on a batch differs between them.
/// </summary>
sealed class MergingCoefficients : IDisposable
{
    readonly Dictionary<string, Tensor> theta0 = new();
    readonly Dictionary<string, Tensor> taus = new();
    readonly AdaMergingOptions ada;

    /// <summary>Parameter names, in the order of a layer-wise λ's rows.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The coefficients being learned.</summary>
    public Parameter Lambdas { get; }

    /// <summary>
    /// Reads θ₀ from <paramref name="own"/> (the model's parameters, which are frozen) and τᵢ = expertᵢ − θ₀ from
    /// each expert, checking names and shapes against the model.
    /// </summary>
    public MergingCoefficients(IReadOnlyDictionary<string, Parameter> own, IReadOnlyList<ITensorSource> experts,
        AdaMergingOptions ada, Device device)
    {
        this.ada = ada;
        Names = own.Keys.ToList();
        using (no_grad())
        {
            foreach (var name in Names)
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
        foreach (var p in own.Values) p.requires_grad = false;
        long rows = ada.Granularity == AdaMergingGranularity.TaskWise ? 1 : Names.Count;
        Lambdas = new Parameter(ScalarArgs.Full([rows, experts.Count], ada.InitLambda, ScalarType.Float32, device), true);
    }

    /// <summary>θ₀ + Σᵢ λᵢ τᵢ for every parameter (λ clamped to [0, 1] when the options say so); differentiable in λ.</summary>
    public Dictionary<string, Tensor> Merge()
    {
        var lam = Clamped();
        var merged = new Dictionary<string, Tensor>(Names.Count);
        for (int i = 0; i < Names.Count; i++)
        {
            var row = lam[ada.Granularity == AdaMergingGranularity.TaskWise ? 0 : i].unsqueeze(0);   // [1, N]
            var b = theta0[Names[i]];
            merged[Names[i]] = b.Plus(row.matmul(taus[Names[i]]).view(b.shape));
        }
        return merged;
    }

    /// <summary>Writes the merge with the current λ into <paramref name="own"/> and returns λ (after clamping) on the CPU.</summary>
    public Tensor CopyInto(IReadOnlyDictionary<string, Parameter> own)
    {
        using (no_grad())
        {
            using var scope = NewDisposeScope();
            foreach (var (name, t) in Merge()) own[name].copy_(t);
            return Clamped().detach().cpu().clone().MoveToOuterDisposeScope();
        }
    }

    Tensor Clamped() => ada.Clamp ? Lambdas.ClampTo(0.0, 1.0) : Lambdas;

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in theta0.Values.Concat(taus.Values)) t.Dispose();
        Lambdas.Dispose();
    }
}
