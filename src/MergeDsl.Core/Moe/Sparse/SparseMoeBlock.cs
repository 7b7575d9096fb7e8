using MergeDsl.Core.Models;
using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>
/// A sparse mixture-of-experts feed-forward block with Hugging Face names (Mixtral's <c>block_sparse_moe</c>,
/// Qwen2-MoE's and DeepSeek-MoE's <c>mlp</c>). Per token: router logits = <c>gate</c>·x, probabilities = softmax over
/// all experts (float32), experts chosen by <see cref="Routing"/>, their weights renormalised per the model
/// (<see cref="SparseMoeConfig.NormTopKProb"/>; DeepSeek only when more than one expert can be chosen, as its code does)
/// and scaled by <see cref="SparseMoeConfig.RoutedScalingFactor"/>; output = Σ weightᵢ · expertᵢ(x) plus the shared
/// expert (Qwen2-MoE: times sigmoid(<c>shared_expert_gate</c>·x); DeepSeek: ungated).
/// Tokens are dispatched in groups: each expert runs once on exactly the tokens routed to it, and its weighted
/// outputs are added back in place; no expert sees a token it was not chosen for (unless <see cref="DenseReference"/>).
/// </summary>
public sealed class SparseMoeBlock : DecoderMlp
{
    readonly ClipLinear router;
    readonly ModuleList<SparseExpert> experts;
    readonly SparseExpert? shared;
    readonly ClipLinear? sharedGate;
    RoutingPolicy routing;

    /// <summary>The MoE settings of the model.</summary>
    public SparseMoeConfig Settings { get; }
    /// <summary>The layer this block sits in.</summary>
    public int LayerIndex { get; }
    /// <summary>Routed experts.</summary>
    public int NumExperts { get; }
    /// <summary>The router weight [experts, hidden] (<c>gate.weight</c>).</summary>
    public Parameter RouterWeight => router.Weight;
    /// <summary>The routed experts, in index order.</summary>
    public IReadOnlyList<SparseExpert> Experts { get; }
    /// <summary>The always-on shared MLP (Qwen2-MoE <c>shared_expert</c>, DeepSeek <c>shared_experts</c>), or null.</summary>
    public SparseExpert? SharedExpert => shared;
    /// <summary>Qwen2-MoE's <c>shared_expert_gate</c> (weight [1, hidden]), or null.</summary>
    public ClipLinear? SharedExpertGate => sharedGate;

    /// <summary>The routing used by forward passes; settable at evaluation time (validated against <see cref="NumExperts"/>).</summary>
    /// <exception cref="ArgumentException">The policy cannot route over this block's experts.</exception>
    public RoutingPolicy Routing
    {
        get => routing;
        set => routing = value.Validate(NumExperts);
    }

    /// <summary>Run every expert on every token (weights zero off the selection): the dense reference of benchmarks and tests.</summary>
    public bool DenseReference { get; set; }

    /// <summary>Keep <see cref="LastRouterLogits"/> and <see cref="LastSelectedCount"/> of each forward pass.</summary>
    public bool Record { get; set; }

    /// <summary>When recording: the router logits [tokens, experts] (float32, CPU) of the last forward pass (tokens = batch × time, row-major).</summary>
    public Tensor? LastRouterLogits { get; private set; }

    /// <summary>When recording: how many experts each token of the last forward pass was sent to ([tokens], int64, CPU).</summary>
    public Tensor? LastSelectedCount { get; private set; }

    /// <summary>Receives every routing decision (statistics collectors), or null.</summary>
    public IRoutingObserver? Observer { get; set; }

    /// <summary>Creates layer <paramref name="layerIndex"/>'s block under <paramref name="layerName"/> (<c>model.layers.N</c>) for <paramref name="config"/>.</summary>
    public SparseMoeBlock(string layerName, int layerIndex, DecoderConfig config)
        : base(layerName + "." + LocalNameOf(config.Moe ?? throw new ArgumentException($"{config.Family.Architecture()} has no MoE settings")))
    {
        var m = config.Moe;
        Settings = m;
        LayerIndex = layerIndex;
        NumExperts = m.NumExperts;
        routing = m.DefaultRouting.Validate(m.NumExperts);
        bool mixtral = m.Style == SparseMoeStyle.Mixtral;
        router = new ClipLinear(FullName + ".gate", config.HiddenSize, m.NumExperts, bias: false);
        var list = Enumerable.Range(0, m.NumExperts)
            .Select(i => new SparseExpert($"{FullName}.experts.{i}", config.HiddenSize, m.ExpertIntermediateSize, mixtral)).ToArray();
        Experts = list;
        experts = new ModuleList<SparseExpert>(list);
        register_module("gate", router);
        register_module("experts", experts);
        if (m.SharedExpertIntermediateSize > 0)
        {
            string local = m.Style == SparseMoeStyle.DeepseekMoe ? "shared_experts" : "shared_expert";
            shared = new SparseExpert($"{FullName}.{local}", config.HiddenSize, m.SharedExpertIntermediateSize, mixtralNames: false);
            register_module(local, shared);
            if (m.SharedExpertGate)
            {
                sharedGate = new ClipLinear(FullName + ".shared_expert_gate", config.HiddenSize, 1, bias: false);
                register_module("shared_expert_gate", sharedGate);
            }
        }
    }

    static string LocalNameOf(SparseMoeConfig m) => m.Style == SparseMoeStyle.Mixtral ? "block_sparse_moe" : "mlp";

    /// <inheritdoc/>
    public override string LocalName => LocalNameOf(Settings);

    /// <summary>Whether the current routing renormalises the chosen probabilities.</summary>
    bool Renormalise => Settings.Style switch
    {
        SparseMoeStyle.Mixtral => true,
        // DeepSeek's gate renormalises only when top_k > 1; under top-p a token may keep one expert, weight then 1.
        SparseMoeStyle.DeepseekMoe => Settings.NormTopKProb && routing is not TopK { K: 1 },
        _ => Settings.NormTopKProb,
    };

    /// <summary>Router logits [tokens, experts] (float32) of hidden states [.., hidden].</summary>
    public Tensor RouterLogits(Tensor x) => router.forward(x.reshape(-1, x.shape[^1])).to_type(ScalarType.Float32);

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var shape = x.shape;
        var flat = x.reshape(-1, shape[^1]);
        var logits = router.forward(flat).to_type(ScalarType.Float32);
        var probs = logits.softmax(-1);
        var selected = SparseRouting.Select(probs, routing);
        var weights = SparseRouting.Weights(probs, selected, Renormalise, Settings.RoutedScalingFactor);
        if (Record)
        {
            LastRouterLogits?.Dispose();
            LastSelectedCount?.Dispose();
            LastRouterLogits = logits.detach().cpu().clone().DetachFromDisposeScope();
            LastSelectedCount = selected.sum(-1, type: ScalarType.Int64).cpu().clone().DetachFromDisposeScope();
        }
        Observer?.Observe(this, logits, selected, weights);
        var w = weights.to_type(x.dtype);
        var output = DenseReference ? RunDense(flat, w) : Dispatch(flat, selected, w);
        if (shared is not null)
        {
            var s = shared.forward(flat);
            if (sharedGate is not null) s = s.mul(nn.functional.sigmoid(sharedGate.forward(flat)));
            output = output.add_(s);
        }
        return output.view(shape);
    }

    /// <summary>Grouped dispatch: per expert, gather its tokens, run it once on them, scatter-add the weighted result.</summary>
    Tensor Dispatch(Tensor flat, Tensor selected, Tensor weights)
    {
        var output = torch.zeros_like(flat);
        // Expert-major (expert, token) pairs; masked_select on the transposed weights walks the same order.
        var selectedT = selected.t();
        var tokens = selectedT.nonzero().select(1, 1);
        var pairWeights = weights.t().masked_select(selectedT);
        // On the CPU: the per-expert counts steer the loop (a no-op for CPU tensors, a copy from CUDA).
        var counts = selected.sum(0, type: ScalarType.Int64).cpu().data<long>().ToArray();
        long offset = 0;
        using var one = 1.0.ToScalar();
        for (int e = 0; e < counts.Length; e++)
        {
            long c = counts[e];
            if (c == 0) continue;
            using var scope = NewDisposeScope();
            var idx = tokens.narrow(0, offset, c);
            var y = Experts[e].forward(flat.index_select(0, idx)).mul_(pairWeights.narrow(0, offset, c).unsqueeze(1));
            output.index_add_(0, idx, y, one);
            offset += c;
        }
        return output;
    }

    /// <summary>Every expert on every token, weighted (zero weight off the selection).</summary>
    Tensor RunDense(Tensor flat, Tensor weights)
    {
        var output = torch.zeros_like(flat);
        for (int e = 0; e < NumExperts; e++)
        {
            using var scope = NewDisposeScope();
            output.add_(Experts[e].forward(flat).mul_(weights.narrow(1, e, 1)));
        }
        return output;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            LastRouterLogits?.Dispose();
            LastSelectedCount?.Dispose();
        }
        base.Dispose(disposing);
    }
}
