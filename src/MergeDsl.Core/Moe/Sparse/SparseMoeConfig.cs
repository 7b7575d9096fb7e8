namespace MergeDsl.Core.Moe.Sparse;

/// <summary>
/// The sparse-MoE fields of a Mixtral / Qwen2-MoE / DeepSeek-MoE config.json (parsed by
/// <see cref="Models.Decoder.DecoderConfig.FromJson"/> with Hugging Face's key names and defaults).
/// </summary>
public sealed record SparseMoeConfig
{
    /// <summary>Which block the sparse layers use.</summary>
    public SparseMoeStyle Style { get; init; }
    /// <summary>Routed experts per sparse layer (<c>num_local_experts</c>, <c>num_experts</c>, <c>n_routed_experts</c>).</summary>
    public int NumExperts { get; init; } = 8;
    /// <summary>Experts per token of the model's own top-k routing (<c>num_experts_per_tok</c>).</summary>
    public int ExpertsPerToken { get; init; } = 2;
    /// <summary>Width of each routed expert (Mixtral <c>intermediate_size</c>; <c>moe_intermediate_size</c> otherwise).</summary>
    public int ExpertIntermediateSize { get; init; } = 14336;
    /// <summary>Renormalise the selected probabilities to sum to 1 (Mixtral always; <c>norm_topk_prob</c> otherwise).</summary>
    public bool NormTopKProb { get; init; } = true;
    /// <summary>Width of the always-on shared MLP (0 = none): Qwen2-MoE <c>shared_expert_intermediate_size</c>,
    /// DeepSeek <c>moe_intermediate_size · n_shared_experts</c>.</summary>
    public int SharedExpertIntermediateSize { get; init; }
    /// <summary>Shared experts fused into the shared MLP (DeepSeek <c>n_shared_experts</c>; 1 for Qwen2-MoE's one shared expert).</summary>
    public int NumSharedExperts { get; init; }
    /// <summary>The shared expert's output is scaled per token by sigmoid(<c>shared_expert_gate</c>·x) (Qwen2-MoE).</summary>
    public bool SharedExpertGate { get; init; }
    /// <summary>Multiplies the routed experts' weights after any renormalisation (<c>routed_scaling_factor</c>; 1 when absent).</summary>
    public double RoutedScalingFactor { get; init; } = 1.0;
    /// <summary>Qwen2-MoE <c>decoder_sparse_step</c>: layer i is sparse when (i + 1) is a multiple of it.</summary>
    public int DecoderSparseStep { get; init; } = 1;
    /// <summary>Qwen2-MoE <c>mlp_only_layers</c>: layers kept dense.</summary>
    public IReadOnlyList<int> MlpOnlyLayers { get; init; } = [];
    /// <summary>DeepSeek <c>first_k_dense_replace</c>: the first layers kept dense.</summary>
    public int FirstKDenseReplace { get; init; }
    /// <summary>DeepSeek <c>moe_layer_freq</c>: layer i (past the dense ones) is sparse when i is a multiple of it.</summary>
    public int MoeLayerFreq { get; init; } = 1;
    /// <summary>
    /// The model's own routing when it is not top-k with <see cref="ExpertsPerToken"/> (config key
    /// <c>mergedsl_routing</c>, e.g. <c>"top-p:0.6,max:4"</c>; transformers ignores it); null = top-k.
    /// </summary>
    public RoutingPolicy? Routing { get; init; }

    /// <summary>The routing a model built from this configuration starts with.</summary>
    public RoutingPolicy DefaultRouting => Routing ?? new TopK(ExpertsPerToken);

    /// <summary>Whether layer <paramref name="layer"/> holds a sparse block (else the dense MLP of width <c>intermediate_size</c>).</summary>
    public bool IsSparseLayer(int layer) => Style switch
    {
        SparseMoeStyle.Qwen2Moe => !MlpOnlyLayers.Contains(layer) && (layer + 1) % DecoderSparseStep == 0,
        SparseMoeStyle.DeepseekMoe => layer >= FirstKDenseReplace && layer % MoeLayerFreq == 0,
        _ => true,
    };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent field (HF key names).</summary>
    public SparseMoeConfig Validate()
    {
        string experts = Style switch { SparseMoeStyle.Mixtral => "num_local_experts", SparseMoeStyle.Qwen2Moe => "num_experts", _ => "n_routed_experts" };
        if (NumExperts < 1) throw new ArgumentException($"{experts} must be positive, got {NumExperts}");
        if (ExpertsPerToken < 1) throw new ArgumentException($"num_experts_per_tok must be positive, got {ExpertsPerToken}");
        if (ExpertsPerToken > NumExperts)
            throw new ArgumentException($"num_experts_per_tok {ExpertsPerToken} is larger than {experts} {NumExperts}");
        if (ExpertIntermediateSize < 1)
            throw new ArgumentException($"{(Style == SparseMoeStyle.Mixtral ? "intermediate_size" : "moe_intermediate_size")} must be positive, got {ExpertIntermediateSize}");
        if (SharedExpertIntermediateSize < 0) throw new ArgumentException($"the shared expert width must not be negative, got {SharedExpertIntermediateSize}");
        if (NumSharedExperts < 0) throw new ArgumentException($"n_shared_experts must not be negative, got {NumSharedExperts}");
        if (DecoderSparseStep < 1) throw new ArgumentException($"decoder_sparse_step must be positive, got {DecoderSparseStep}");
        if (MoeLayerFreq < 1) throw new ArgumentException($"moe_layer_freq must be positive, got {MoeLayerFreq}");
        if (FirstKDenseReplace < 0) throw new ArgumentException($"first_k_dense_replace must not be negative, got {FirstKDenseReplace}");
        if (!(RoutedScalingFactor > 0) || double.IsInfinity(RoutedScalingFactor))
            throw new ArgumentException($"routed_scaling_factor must be a positive number, got {RoutedScalingFactor}");
        if (SharedExpertGate && SharedExpertIntermediateSize == 0) throw new ArgumentException("a shared expert gate needs a shared expert");
        Routing?.Validate(NumExperts);
        return this;
    }
}
