using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Options of SMILE upscaling.</summary>
public sealed record SmileOptions
{
    /// <summary>Rank k of each expert's SVD approximation of ΔWᵢ.</summary>
    public int Rank { get; init; } = 16;
    /// <summary>Right singular vectors g the router reads.</summary>
    public int GateRank { get; init; } = 2;
    /// <summary>Experts per token.</summary>
    public int TopK { get; init; } = 1;
}

/// <summary>
/// SMILE (Tang et al., 2024), training-free: every MLP Linear becomes W₀x + b₀ + Σ_{i ∈ topK} pᵢ (Uᵢ Sᵢ Vᵢᵀ x + Δbᵢ)
/// with rank-k SVD experts of ΔWᵢ, routed per token by the norms ‖Vᵢ[:, :g]ᵀ x‖ (softmax, top-K, as in
/// FusionBench). Non-MLP parameters are merged by task arithmetic.
/// </summary>
public sealed class SmileModel : IDisposable
{
    sealed record Upscaled(Tensor W0, Tensor B0, Tensor Us, Tensor Vh, Tensor Db, Tensor Gate); // Us [N, out, k], Vh [N*k, in], Db [N, out], Gate [N*g, in]

    readonly TinyClipConfig _config;
    readonly Dictionary<string, Tensor> _base;
    readonly Dictionary<string, Upscaled> _linears = new();
    readonly SmileOptions _o;
    readonly int _n;

    /// <summary>Builds the upscaled model.</summary>
    public SmileModel(TinyClipConfig config, IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> experts,
        IReadOnlyList<Dictionary<string, Tensor>> taus, SmileOptions o, double lambda = 0.3)
    {
        _config = config; _o = o; _n = experts.Count;
        _base = StateDictMerges.TaskArithmetic(pre, taus, lambda);
        for (int l = 0; l < config.Layers; l++)
            foreach (var fc in new[] { "mlp.fc1", "mlp.fc2" })
            {
                var prefix = TinyClip.Layer(l, fc);
                var us = new List<Tensor>(); var vh = new List<Tensor>(); var db = new List<Tensor>(); var gate = new List<Tensor>();
                foreach (var tau in taus)
                {
                    var (u, s, v) = linalg.svd(tau[prefix + ".weight"], fullMatrices: false);
                    int k = (int)Math.Min(o.Rank, s.shape[0]);
                    us.Add(u[TensorIndex.Colon, TensorIndex.Slice(0, k)] * s[TensorIndex.Slice(0, k)].unsqueeze(0));
                    vh.Add(v[TensorIndex.Slice(0, k)]);
                    gate.Add(v[TensorIndex.Slice(0, Math.Min(o.GateRank, k))]);
                    db.Add(tau[prefix + ".bias"]);
                }
                _linears[prefix] = new Upscaled(pre[prefix + ".weight"].clone(), pre[prefix + ".bias"].clone(),
                    stack(us.ToArray()), cat(vh.ToArray(), 0), stack(db.ToArray()), cat(gate.ToArray(), 0));
            }
    }

    Tensor Linear(string prefix, Tensor x)
    {
        var m = _linears[prefix];
        var baseOut = nn.functional.linear(x, m.W0, m.B0);                                  // [B, T, out]
        long b = x.shape[0], t = x.shape[1];
        int k = (int)m.Us.shape[2], g = (int)(m.Gate.shape[0] / _n);
        var logits = matmul(x, m.Gate.t()).view(b, t, _n, g).norm(-1);                     // [B, T, N]
        var probs = softmax(logits, -1);
        var (topv, topi) = probs.topk(_o.TopK, -1);
        var w = zeros_like(probs).scatter(-1, topi, topv);                                  // [B, T, N]
        var proj = matmul(x, m.Vh.t()).view(b, t, _n, k);                                   // [B, T, N, k]
        var expertOut = einsum("btnk,nok->btno", proj, m.Us) + m.Db;                        // [B, T, N, out]
        return baseOut + (w.unsqueeze(-1) * expertOut).sum(2L, false);
    }

    /// <summary>Image embeddings.</summary>
    public Tensor Encode(Tensor images) => TinyClip.Encode(_config, _base, images, (l, h) =>
        Linear(TinyClip.Layer(l, "mlp.fc2"), TinyClip.QuickGelu(Linear(TinyClip.Layer(l, "mlp.fc1"), h))));

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _base.Values) t.Dispose();
        foreach (var m in _linears.Values) { m.W0.Dispose(); m.B0.Dispose(); m.Us.Dispose(); m.Vh.Dispose(); m.Db.Dispose(); m.Gate.Dispose(); }
    }
}
