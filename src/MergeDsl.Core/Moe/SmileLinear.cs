using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>One SMILE expert: the rank-k SVD of ΔWᵢ = Wᵢ − W₀ as <c>u</c> = U[:, :k] [out, k] and
/// <c>svh</c> = diag(S[:k]) Vᵀ[:k] [k, in], plus <c>bias</c> = bᵢ − b₀.</summary>
public sealed class SmileExpert : NamedModule
{
    /// <summary>U[:, :k] [out, k].</summary>
    public Parameter U { get; }
    /// <summary>S[:k]·Vh[:k] [k, in].</summary>
    public Parameter Svh { get; }
    /// <summary>Bias difference [out], or null when the Linear has no bias (decoder projections).</summary>
    public Parameter? Bias { get; }

    /// <summary>Creates a zero expert of rank <paramref name="rank"/> (with a bias difference when <paramref name="bias"/>).</summary>
    public SmileExpert(string fullName, long inFeatures, long outFeatures, long rank, bool bias = true) : base(fullName)
    {
        U = Filled([outFeatures, rank], 0.0, false);
        Svh = Filled([rank, inFeatures], 0.0, false);
        register_parameter("u", U);
        register_parameter("svh", Svh);
        if (bias)
        {
            Bias = Filled([outFeatures], 0.0, false);
            register_parameter("bias", Bias);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => nn.functional.linear(nn.functional.linear(x, Svh), U, Bias);
}

/// <summary>
/// SMILE (Tang et al. 2024, "SMILE: Zero-Shot Sparse Mixture of Low-Rank Experts"): training-free.
/// y = W₀x + b₀ + Σᵢ pᵢ(x)·(uᵢ svhᵢ x + Δbᵢ), routed per token by the norm of x projected on each
/// expert's top-g right singular vectors (<c>gate.weight</c> = [V₁[:, :g]ᵀ; …; V_N[:, :g]ᵀ], [N·g, in]),
/// softmax, then selection (top-k by default, kept probabilities renormalised). With one expert the
/// routing weight is 1. Experts are computed densely and masked, which is exact.
/// </summary>
public sealed class SmileLinear : NamedModule
{
    readonly ClipLinear baseLinear;
    readonly ModuleList<SmileExpert> experts;
    readonly WeightHolder gate;
    readonly long gateRank;

    /// <summary>Expert selection over the softmax probabilities.</summary>
    public RouterSelection Selection { get; }
    /// <summary>Number of experts.</summary>
    public int NumExperts { get; }

    /// <summary>Creates a zero-initialised SMILE Linear (filled by upscaling or loading); without <paramref name="bias"/>
    /// neither the base nor the experts carry a bias (Llama-family projections).</summary>
    public SmileLinear(string fullName, long inFeatures, long outFeatures, int numExperts, long rank, long gateRank, RouterSelection selection,
        bool bias = true)
        : base(fullName)
    {
        NumExperts = numExperts;
        this.gateRank = gateRank;
        Selection = selection.Validate(numExperts);
        baseLinear = new ClipLinear(fullName + ".base", inFeatures, outFeatures, bias);
        foreach (var p in baseLinear.parameters()) p.requires_grad = false;
        experts = new ModuleList<SmileExpert>(Enumerable.Range(0, numExperts)
            .Select(i => new SmileExpert($"{fullName}.experts.{i}", inFeatures, outFeatures, rank, bias)).ToArray());
        gate = new WeightHolder(fullName + ".gate", Filled([numExperts * gateRank, inFeatures], 0.0, false));
        register_module("base", baseLinear);
        register_module("experts", experts);
        register_module("gate", gate);
    }

    /// <summary>The frozen base Linear.</summary>
    public ClipLinear Base => baseLinear;
    /// <summary>The experts.</summary>
    public IReadOnlyList<SmileExpert> Experts => experts.ToList();
    /// <summary>The gate rows [N·g, in].</summary>
    public Parameter GateWeight => gate.Weight;

    /// <summary>Routing probabilities [.., N] after selection.</summary>
    public Tensor Probabilities(Tensor x)
    {
        if (NumExperts == 1) return torch.ones([.. x.shape[..^1], 1], dtype: x.dtype, device: x.device);
        var proj = nn.functional.linear(x, gate.Weight).view([.. x.shape[..^1], NumExperts, gateRank]);
        var logits = proj.norm(-1, false, 2);
        return Selection.ApplyToProbabilities(torch.softmax(logits, -1));
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var y = baseLinear.forward(x);
        var p = Probabilities(x);                                                  // [.., N]
        var svh = torch.cat(experts.Select(e => (Tensor)e.Svh).ToArray(), 0);     // [N·k, in]
        long n = NumExperts, k = experts[0].Svh.shape[0];
        var t = nn.functional.linear(x, svh).view([.. x.shape[..^1], n, k]);       // [.., N, k]
        var u = torch.stack(experts.Select(e => (Tensor)e.U).ToArray(), 0);       // [N, out, k]
        var weighted = t * p.unsqueeze(-1);                                        // [.., N, k]
        var flat = weighted.reshape(-1, n * k);                                    // [M, N·k]
        var uCat = u.permute(0, 2, 1).reshape(n * k, -1);                          // [N·k, out]
        var delta = flat.matmul(uCat).view([.. x.shape[..^1], -1]);
        if (experts[0].Bias is not null)
            delta = delta.Plus(p.matmul(torch.stack(experts.Select(e => (Tensor)e.Bias!).ToArray(), 0)));   // [N, out] biases
        return y.Plus(delta);
    }
}
