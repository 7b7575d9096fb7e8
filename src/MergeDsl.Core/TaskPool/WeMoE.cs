using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Options of a weight-ensembling MoE upscaling.</summary>
public sealed record WeMoEOptions
{
    /// <summary>Router output bias at initialisation (= the TA coefficient, so the initial model is TA(λ)).</summary>
    public double InitLambda { get; init; } = 0.3;
    /// <summary>Fraction of each task vector tensor kept (1 = WEMoE; 0.1 = E-WEMoE's sparse task vectors).</summary>
    public double TaskVectorDensity { get; init; } = 1.0;
    /// <summary>One router shared by every layer (E-WEMoE) instead of one per layer.</summary>
    public bool SharedRouter { get; init; }
    /// <summary>Seed of the routers' N(0, 0.01²) initialisation.</summary>
    public int Seed { get; init; } = 11;
}

/// <summary>
/// WEMoE (Tang et al., ICML 2024) over the tiny CLIP: every block's MLP runs with per-sample weights
/// W₀ + Σᵢ r̄ᵢ(x) τᵢ, where r(h) = W₂ ReLU(W₁ h + b₁) + b₂ reads the MLP input, is averaged over the sample's
/// tokens and has no softmax; W ~ N(0, 0.01²), b₂ = λ. Non-MLP parameters are merged by task arithmetic.
/// Only router parameters train.
/// </summary>
public sealed class WeMoEModel : IDisposable
{
    readonly TinyClipConfig _config;
    readonly Dictionary<string, Tensor> _base;
    readonly Tensor[] _t1w, _t1b, _t2w, _t2b;           // per layer: [N, I*D], [N, I], [N, D*I], [N, D]
    readonly List<Dictionary<string, Parameter>> _routers;
    readonly int _n;

    /// <summary>Builds the upscaled model from the pretrained parameters and the task vectors.</summary>
    public WeMoEModel(TinyClipConfig config, IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus, WeMoEOptions o)
    {
        _config = config;
        _n = taus.Count;
        _base = StateDictMerges.TaskArithmetic(pre, taus, o.InitLambda);
        foreach (var name in pre.Keys.Where(TinyClip.IsMlp).ToList()) { _base[name].Dispose(); _base[name] = pre[name].clone(); }
        Tensor Stack(int l, string rest) => stack(taus.Select(t =>
            StateDictMerges.TopKPerTensor(t[TinyClip.Layer(l, rest)], o.TaskVectorDensity).flatten()).ToArray());
        int layers = config.Layers;
        _t1w = new Tensor[layers]; _t1b = new Tensor[layers]; _t2w = new Tensor[layers]; _t2b = new Tensor[layers];
        for (int l = 0; l < layers; l++)
        {
            _t1w[l] = Stack(l, "mlp.fc1.weight"); _t1b[l] = Stack(l, "mlp.fc1.bias");
            _t2w[l] = Stack(l, "mlp.fc2.weight"); _t2b[l] = Stack(l, "mlp.fc2.bias");
        }
        var gen = new Generator((ulong)o.Seed);
        int d = config.Hidden;
        _routers = Enumerable.Range(0, o.SharedRouter ? 1 : layers).Select(_ => new Dictionary<string, Parameter>
        {
            ["w1"] = new Parameter(normal(0.0, 0.01, [d, d], generator: gen), true),
            ["b1"] = new Parameter(zeros(d), true),
            ["w2"] = new Parameter(normal(0.0, 0.01, [_n, d], generator: gen), true),
            ["b2"] = new Parameter(full(_n, o.InitLambda), true),
        }).ToList();
    }

    /// <summary>The trainable router parameters.</summary>
    public IReadOnlyList<Parameter> RouterParameters => _routers.SelectMany(r => r.Values).ToList();

    /// <summary>Per-sample routing weights [B, N] of layer <paramref name="layer"/> for MLP inputs [B, T, D].</summary>
    public Tensor Routes(int layer, Tensor h)
    {
        var r = _routers[_routers.Count == 1 ? 0 : layer];
        var hidden = nn.functional.relu(nn.functional.linear(h, r["w1"], r["b1"]));
        return nn.functional.linear(hidden, r["w2"], r["b2"]).mean([1]);
    }

    /// <summary>The upscaled MLP of a layer for inputs [B, T, D].</summary>
    public Tensor Mlp(int layer, Tensor h) => MlpWithRoutes(layer, h, Routes(layer, h));

    /// <summary>The upscaled MLP with given routing weights [B, N] (used by tests and oracle checks).</summary>
    public Tensor MlpWithRoutes(int layer, Tensor h, Tensor routes)
    {
        long b = h.shape[0];
        int d = _config.Hidden, i = _config.Intermediate;
        var w1 = _base[TinyClip.Layer(layer, "mlp.fc1.weight")].unsqueeze(0) + matmul(routes, _t1w[layer]).view(b, i, d);
        var b1 = _base[TinyClip.Layer(layer, "mlp.fc1.bias")].unsqueeze(0) + matmul(routes, _t1b[layer]);
        var a = TinyClip.QuickGelu(bmm(h, w1.transpose(1, 2)) + b1.unsqueeze(1));
        var w2 = _base[TinyClip.Layer(layer, "mlp.fc2.weight")].unsqueeze(0) + matmul(routes, _t2w[layer]).view(b, d, i);
        var b2 = _base[TinyClip.Layer(layer, "mlp.fc2.bias")].unsqueeze(0) + matmul(routes, _t2b[layer]);
        return bmm(a, w2.transpose(1, 2)) + b2.unsqueeze(1);
    }

    /// <summary>Image embeddings.</summary>
    public Tensor Encode(Tensor images) => TinyClip.Encode(_config, _base, images, Mlp);

    /// <summary>Mean routing weights per layer [L, N] of a batch (for the report).</summary>
    public double[,] MeanRoutes(Tensor images)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var sums = new double[_config.Layers, _n];
        TinyClip.Encode(_config, _base, images, (l, h) =>
        {
            var r = Routes(l, h);
            var m = r.mean([0]);
            for (int k = 0; k < _n; k++) sums[l, k] = m[k].item<float>();
            return MlpWithRoutes(l, h, r);
        });
        return sums;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _base.Values.Concat(_t1w).Concat(_t1b).Concat(_t2w).Concat(_t2b)) t.Dispose();
        foreach (var r in _routers) foreach (var p in r.Values) p.Dispose();
    }
}
