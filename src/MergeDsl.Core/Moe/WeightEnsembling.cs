using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>Routing behaviour shared by the weight-ensembling modules.</summary>
/// <param name="BatchReduce">One route for the whole batch (mean over samples) instead of one per sample.</param>
/// <param name="Selection">Dense, top-k or top-p over the averaged routing weights.</param>
public sealed record WeightEnsemblingOptions(bool BatchReduce = false, RouterSelection? Selection = null)
{
    /// <summary>The selection (dense when unset).</summary>
    public RouterSelection Routing => Selection ?? RouterSelection.Dense;
}

/// <summary>A module whose per-sample expert weights can be read or forced (oracle routing, inspection).</summary>
public interface IRoutedModule
{
    /// <summary>When set, used as the routing weights [B, N] or [1, N] instead of the router's output.</summary>
    Tensor? ForcedRoutes { get; set; }
    /// <summary>The routing weights of the last forward pass (detached), or null.</summary>
    Tensor? LastRoutes { get; }
    /// <summary>Number of experts.</summary>
    int NumExperts { get; }
}

/// <summary>fc1 + fc2 parameter holder (the base MLP, or one expert's task vector).</summary>
public sealed class MlpParams : NamedModule
{
    /// <summary>fc1 (in → intermediate).</summary>
    public ClipLinear Fc1 { get; }
    /// <summary>fc2 (intermediate → in).</summary>
    public ClipLinear Fc2 { get; }

    /// <summary>Creates frozen fc1/fc2 parameters of the given sizes.</summary>
    public MlpParams(string fullName, long hidden, long intermediate) : base(fullName)
    {
        Fc1 = new ClipLinear(fullName + ".fc1", hidden, intermediate);
        Fc2 = new ClipLinear(fullName + ".fc2", intermediate, hidden);
        register_module("fc1", Fc1);
        register_module("fc2", Fc2);
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => throw new InvalidOperationException($"{FullName} holds parameters only");
}

/// <summary>Per-sample weight ensembling of one Linear: W = W₀ + Σᵢ rᵢ τᵢ, b = b₀ + Σᵢ rᵢ βᵢ.</summary>
internal static class Ensemble
{
    /// <summary>Stacks the experts' tensors [N, ...].</summary>
    public static Tensor Stack(IEnumerable<Tensor> ts) => torch.stack(ts.ToArray(), 0);

    /// <summary>x [B, T, in] with routes r [B or 1, N].</summary>
    public static Tensor Linear(Tensor x, Tensor r, Tensor w0, Tensor? b0, Tensor tauW, Tensor? tauB)
    {
        long n = tauW.shape[0], rows = r.shape[0];
        var w = w0.Plus(r.matmul(tauW.reshape(n, -1)).view([rows, .. w0.shape]));   // [R, out, in]
        Tensor? b = b0 is null ? null : tauB is null ? b0.expand(rows, -1) : b0.Plus(r.matmul(tauB));   // [R, out]
        if (rows == 1) return nn.functional.linear(x, w[0], b?[0]);
        if (x.shape[0] != rows) throw new InvalidOperationException($"routes for {rows} samples but a batch of {x.shape[0]}");
        var y = torch.bmm(x, w.transpose(1, 2));
        return b is null ? y : y.Plus(b.unsqueeze(1));
    }
}

/// <summary>Shared routing logic: token routes averaged per sample (and over the batch with batch_reduce), then selection.</summary>
public abstract class RoutedModuleBase : NamedModule, IRoutedModule
{
    // Held in arrays, not Module-typed fields: TorchSharp registers Module fields by reflection, which
    // would put a shared router's parameters under every layer's name.
    readonly WeightEnsemblingRouter?[] ownRouter = new WeightEnsemblingRouter?[1];
    readonly WeightEnsemblingRouter[] router = new WeightEnsemblingRouter[1];

    /// <summary>Routing options.</summary>
    public WeightEnsemblingOptions Options { get; }
    /// <inheritdoc/>
    public int NumExperts { get; }
    /// <inheritdoc/>
    public Tensor? ForcedRoutes { get; set; }
    /// <inheritdoc/>
    public Tensor? LastRoutes { get; private set; }
    /// <summary>The router (own, or shared across layers).</summary>
    public WeightEnsemblingRouter Router => router[0];
    /// <summary>True when the router belongs to this module (its parameters are <c>&lt;path&gt;.router.*</c>).</summary>
    public bool OwnsRouter => ownRouter[0] is not null;

    /// <summary>Registers an own router unless <paramref name="sharedRouter"/> is given.</summary>
    protected RoutedModuleBase(string fullName, long routerIn, int numExperts, int routerDepth, double initLambda,
        WeightEnsemblingOptions options, WeightEnsemblingRouter? sharedRouter, Generator? generator = null) : base(fullName)
    {
        NumExperts = numExperts;
        Options = options;
        options.Routing.Validate(numExperts);
        if (sharedRouter is null)
        {
            ownRouter[0] = new WeightEnsemblingRouter(fullName + ".router", routerIn, numExperts, routerDepth, initLambda, generator);
            router[0] = ownRouter[0]!;
        }
        else router[0] = sharedRouter;
    }

    /// <summary>Registers the own router (call after the frozen parameters, to keep names in order).</summary>
    protected void RegisterRouter()
    {
        if (ownRouter[0] is { } r) register_module("router", r);
    }

    /// <summary>Routing weights [B, N] (or [1, N] with batch_reduce) for input [B, T, d].</summary>
    protected Tensor Routes(Tensor x)
    {
        Tensor r;
        if (ForcedRoutes is { } f) r = f.to(x.dtype).to(x.device);
        else
        {
            r = router[0].forward(x);
            r = r.dim() == 3 ? r.mean([1]) : r;            // token routes averaged per sample
            if (Options.BatchReduce) r = r.mean([0], keepdim: true);
            r = Options.Routing.ApplyToWeights(r);
        }
        LastRoutes?.Dispose();
        LastRoutes = r.detach().cpu().DetachFromDisposeScope();
        return r;
    }
}

/// <summary>
/// WEMoE MLP (Tang et al. 2024): frozen base MLP W₀ (<c>base.fc1/fc2</c>), N frozen task vectors
/// τᵢ = MLPᵢ − MLP₀ (<c>experts.i.fc1/fc2</c>), a router over the MLP input (<c>router.*</c>). Sample x runs
/// fc2∘act∘fc1 with W₀ + Σᵢ r̄ᵢ(x)τᵢ, r̄ the mean of its token routes; the merged weights are built per
/// sample ([B, out, in]) and applied with a batched matmul.
/// </summary>
public sealed class WeightEnsemblingMlp : RoutedModuleBase
{
    readonly Func<Tensor, Tensor> act;
    readonly MlpParams baseMlp;
    readonly ModuleList<MlpParams> experts;

    /// <summary>Creates a module with zero base/expert weights (filled by upscaling or loading) and an initialised router.</summary>
    public WeightEnsemblingMlp(string fullName, ClipVisionConfig cfg, int numExperts, int routerDepth, double initLambda,
        WeightEnsemblingOptions options, WeightEnsemblingRouter? sharedRouter = null, Generator? generator = null)
        : base(fullName, cfg.HiddenSize, numExperts, routerDepth, initLambda, options, sharedRouter, generator)
    {
        act = Activations.Get(cfg.HiddenAct);
        baseMlp = new MlpParams(fullName + ".base", cfg.HiddenSize, cfg.IntermediateSize);
        experts = new ModuleList<MlpParams>(Enumerable.Range(0, numExperts)
            .Select(i => new MlpParams($"{fullName}.experts.{i}", cfg.HiddenSize, cfg.IntermediateSize)).ToArray());
        register_module("base", baseMlp);
        register_module("experts", experts);
        RegisterRouter();
    }

    /// <summary>The frozen base MLP.</summary>
    public MlpParams Base => baseMlp;
    /// <summary>The frozen task vectors.</summary>
    public IReadOnlyList<MlpParams> Experts => experts.ToList();

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var r = Routes(x);
        var h = Ensemble.Linear(x, r, baseMlp.Fc1.Weight, baseMlp.Fc1.Bias,
            Ensemble.Stack(experts.Select(e => (Tensor)e.Fc1.Weight)), Ensemble.Stack(experts.Select(e => (Tensor)e.Fc1.Bias!)));
        return Ensemble.Linear(act(h), r, baseMlp.Fc2.Weight, baseMlp.Fc2.Bias,
            Ensemble.Stack(experts.Select(e => (Tensor)e.Fc2.Weight)), Ensemble.Stack(experts.Select(e => (Tensor)e.Fc2.Bias!)));
    }
}

/// <summary>
/// A weight-ensembling Linear (for attention projections, or fc1/fc2 alone): <c>base.weight/bias</c>,
/// <c>experts.i.weight/bias</c> (task vectors), <c>router.*</c> over the Linear's input.
/// </summary>
public sealed class WeightEnsemblingLinear : RoutedModuleBase
{
    readonly ClipLinear baseLinear;
    readonly ModuleList<ClipLinear> experts;

    /// <summary>Creates a module with zero base/expert weights and an initialised router.</summary>
    public WeightEnsemblingLinear(string fullName, long inFeatures, long outFeatures, int numExperts, int routerDepth,
        double initLambda, WeightEnsemblingOptions options, WeightEnsemblingRouter? sharedRouter = null, Generator? generator = null)
        : base(fullName, inFeatures, numExperts, routerDepth, initLambda, options, sharedRouter, generator)
    {
        baseLinear = new ClipLinear(fullName + ".base", inFeatures, outFeatures);
        experts = new ModuleList<ClipLinear>(Enumerable.Range(0, numExperts)
            .Select(i => new ClipLinear($"{fullName}.experts.{i}", inFeatures, outFeatures)).ToArray());
        register_module("base", baseLinear);
        register_module("experts", experts);
        foreach (var p in baseLinear.parameters().Concat(experts.parameters())) p.requires_grad = false;
        RegisterRouter();
    }

    /// <summary>The frozen base Linear.</summary>
    public ClipLinear Base => baseLinear;
    /// <summary>The frozen task vectors.</summary>
    public IReadOnlyList<ClipLinear> Experts => experts.ToList();

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var r = Routes(x);
        return Ensemble.Linear(x, r, baseLinear.Weight, baseLinear.Bias,
            Ensemble.Stack(experts.Select(e => (Tensor)e.Weight)), Ensemble.Stack(experts.Select(e => (Tensor)e.Bias!)));
    }
}
