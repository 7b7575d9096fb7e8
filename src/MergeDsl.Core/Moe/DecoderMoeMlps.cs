using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>gate_proj + up_proj + down_proj parameter holder (the base SwiGLU MLP, or one expert's task vector).</summary>
public sealed class SwiGluParams : NamedModule
{
    /// <summary>gate_proj (hidden → intermediate).</summary>
    public ClipLinear Gate { get; }
    /// <summary>up_proj (hidden → intermediate).</summary>
    public ClipLinear Up { get; }
    /// <summary>down_proj (intermediate → hidden).</summary>
    public ClipLinear Down { get; }

    /// <summary>Creates frozen projections of the given sizes (biases only with Llama's <c>mlp_bias</c>).</summary>
    public SwiGluParams(string fullName, long hidden, long intermediate, bool bias) : base(fullName)
    {
        Gate = new ClipLinear(fullName + ".gate_proj", hidden, intermediate, bias);
        Up = new ClipLinear(fullName + ".up_proj", hidden, intermediate, bias);
        Down = new ClipLinear(fullName + ".down_proj", intermediate, hidden, bias);
        register_module("gate_proj", Gate);
        register_module("up_proj", Up);
        register_module("down_proj", Down);
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <summary>The three projections by local name, in HF order.</summary>
    public IReadOnlyList<(string Name, ClipLinear Linear)> Projections => [("gate_proj", Gate), ("up_proj", Up), ("down_proj", Down)];

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => throw new InvalidOperationException($"{FullName} holds parameters only");
}

/// <summary>
/// WEMoE on a decoder's SwiGLU MLP, routed <b>per token</b>: token t runs
/// down(silu(gate(x_t))·up(x_t)) with every projection's weights W₀ + Σᵢ rᵢ(x_t)·τᵢ, where r(x_t) is the router's
/// output for that token alone. A route never mixes positions, so the prediction at t cannot see tokens after t
/// (CLIP's WEMoE averages token routes over the whole sample, which for next-token scoring would leak later tokens
/// into earlier predictions), and a KV-cache step computes exactly what a full recomputation does.
/// Names: <c>base.{gate,up,down}_proj.*</c>, <c>experts.i.{gate,up,down}_proj.*</c> (task vectors), <c>router.*</c>.
/// By linearity (W₀ + Σ rᵢτᵢ)x = W₀x + Σ rᵢ(τᵢx), so no per-token weight matrix is ever built.
/// </summary>
public sealed class WeightEnsemblingSwiGlu : DecoderMlp, IRoutedModule
{
    // Arrays, not Module-typed fields: TorchSharp registers Module fields by reflection, which would put a shared
    // router's parameters under every layer's name.
    readonly WeightEnsemblingRouter?[] ownRouter = new WeightEnsemblingRouter?[1];
    readonly WeightEnsemblingRouter[] router = new WeightEnsemblingRouter[1];
    readonly SwiGluParams baseMlp;
    readonly ModuleList<SwiGluParams> experts;

    /// <summary>Routing options (per-token selection; batch reduction is refused for decoders).</summary>
    public WeightEnsemblingOptions Options { get; }
    /// <inheritdoc/>
    public int NumExperts { get; }
    /// <inheritdoc/>
    public Tensor? ForcedRoutes { get; set; }
    /// <inheritdoc/>
    public Tensor? LastRoutes { get; private set; }
    /// <summary>The router (own, or shared across layers).</summary>
    public WeightEnsemblingRouter Router => router[0];

    /// <summary>Creates the module under <paramref name="fullName"/> (<c>model.layers.N.mlp</c>) with zero base and expert weights
    /// (filled by upscaling or loading) and an initialised router (own unless <paramref name="sharedRouter"/>).</summary>
    public WeightEnsemblingSwiGlu(string fullName, DecoderConfig cfg, int numExperts, int routerDepth, double initLambda,
        WeightEnsemblingOptions options, WeightEnsemblingRouter? sharedRouter = null, Generator? generator = null) : base(fullName)
    {
        if (options.BatchReduce)
            throw new ArgumentException("batch-reduce averages routes over a whole batch of sequences, which lets every position see the future; decoders route per token");
        NumExperts = numExperts;
        Options = options;
        options.Routing.Validate(numExperts);
        baseMlp = new SwiGluParams(fullName + ".base", cfg.HiddenSize, cfg.IntermediateSize, cfg.MlpBias);
        experts = new ModuleList<SwiGluParams>(Enumerable.Range(0, numExperts)
            .Select(i => new SwiGluParams($"{fullName}.experts.{i}", cfg.HiddenSize, cfg.IntermediateSize, cfg.MlpBias)).ToArray());
        register_module("base", baseMlp);
        register_module("experts", experts);
        if (sharedRouter is null)
        {
            ownRouter[0] = new WeightEnsemblingRouter(fullName + ".router", cfg.HiddenSize, numExperts, routerDepth, initLambda, generator);
            router[0] = ownRouter[0]!;
            register_module("router", ownRouter[0]!);
        }
        else router[0] = sharedRouter;
    }

    /// <inheritdoc/>
    public override string LocalName => "mlp";
    /// <summary>The frozen base MLP.</summary>
    public SwiGluParams Base => baseMlp;
    /// <summary>The frozen task vectors.</summary>
    public IReadOnlyList<SwiGluParams> Experts => experts.ToList();

    /// <summary>
    /// Routing weights [B, T, N] for input [B, T, d]: the router's output per token, then the selection per token.
    /// Forced routes [R, N] (one row per sequence, or one for all) apply to every position.
    /// </summary>
    Tensor Routes(Tensor x)
    {
        Tensor r;
        if (ForcedRoutes is { } f)
        {
            r = f.to(x.dtype).to(x.device);
            if (r.dim() == 2) r = r.unsqueeze(1);
        }
        else r = Options.Routing.ApplyToWeights(router[0].forward(x));
        LastRoutes?.Dispose();
        LastRoutes = r.detach().cpu().DetachFromDisposeScope();
        return r;
    }

    /// <summary>x [B, T, in] through W₀ + Σᵢ rᵢτᵢ with per-token routes r [B or 1, T or 1, N].</summary>
    static Tensor Project(Tensor x, Tensor r, ClipLinear b, IReadOnlyList<ClipLinear> taus)
    {
        var y = b.forward(x);
        long n = taus.Count, outF = b.Weight.shape[0];
        var w = torch.cat(taus.Select(t => (Tensor)t.Weight).ToArray(), 0);                       // [N·out, in]
        var each = nn.functional.linear(x, w).view([.. x.shape[..^1], n, outF]);                   // [B, T, N, out]
        y = y.Plus((each * r.unsqueeze(-1)).sum([-2]));
        if (b.Bias is not null)
            y = y.Plus(r.matmul(torch.stack(taus.Select(t => (Tensor)t.Bias!).ToArray(), 0)));   // Σ rᵢβᵢ
        return y;
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var r = Routes(x);
        var ex = experts.ToList();
        var g = Project(x, r, baseMlp.Gate, ex.Select(e => e.Gate).ToList());
        var u = Project(x, r, baseMlp.Up, ex.Select(e => e.Up).ToList());
        return Project(nn.functional.silu(g).mul(u), r, baseMlp.Down, ex.Select(e => e.Down).ToList());
    }
}

/// <summary>
/// A decoder SwiGLU MLP whose projections may each be replaced (by a <see cref="SmileLinear"/>): names stay
/// <c>mlp.gate_proj</c>, <c>mlp.up_proj</c>, <c>mlp.down_proj</c>, with the replacement's own names below them.
/// SMILE routes every token by its own input, so the block stays causal.
/// </summary>
public sealed class ComposedSwiGlu : DecoderMlp
{
    readonly nn.Module<Tensor, Tensor> gate, up, down;

    /// <summary>Creates the block from three projection modules (plain <see cref="ClipLinear"/> or MoE Linears).</summary>
    public ComposedSwiGlu(string fullName, nn.Module<Tensor, Tensor> gate, nn.Module<Tensor, Tensor> up, nn.Module<Tensor, Tensor> down)
        : base(fullName)
    {
        this.gate = gate; this.up = up; this.down = down;
        register_module("gate_proj", gate);
        register_module("up_proj", up);
        register_module("down_proj", down);
    }

    /// <inheritdoc/>
    public override string LocalName => "mlp";

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => down.forward(nn.functional.silu(gate.forward(x)).mul(up.forward(x)));
}
