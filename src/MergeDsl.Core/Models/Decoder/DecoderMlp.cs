namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// The feed-forward block of a decoder layer: [B, T, hidden] → [B, T, hidden]. The layer registers it under
/// <see cref="LocalName"/>, so a sparse MoE block (Mixtral's <c>block_sparse_moe</c>, Qwen2-MoE's and
/// DeepSeek-MoE's <c>mlp</c> with <c>experts.N</c>) can take the dense MLP's place with its own HF names.
/// Blocks see one token at a time (no mixing along T), which keeps them causal.
/// </summary>
public abstract class DecoderMlp : NamedModule
{
    /// <summary>Creates a block whose parameters are named <c>fullName.&lt;local&gt;</c>.</summary>
    protected DecoderMlp(string fullName) : base(fullName) { }

    /// <summary>The attribute name inside the layer (<c>mlp</c>, <c>block_sparse_moe</c>).</summary>
    public abstract string LocalName { get; }
}

/// <summary>Chooses a layer's feed-forward block from the configuration (the seam for MoE decoders).</summary>
/// <param name="layerName">The layer's full name (<c>model.layers.N</c>).</param>
/// <param name="layerIndex">N.</param>
/// <param name="config">The model configuration.</param>
public delegate DecoderMlp DecoderMlpFactory(string layerName, int layerIndex, DecoderConfig config);

/// <summary>The factories the runtime ships.</summary>
public static class DecoderMlps
{
    /// <summary>The dense SwiGLU MLP of Llama, Mistral and Qwen2.</summary>
    public static DecoderMlp Dense(string layerName, int layerIndex, DecoderConfig config)
        => new SwiGluMlp(layerName + ".mlp", config.HiddenSize, config.IntermediateSize, config.MlpBias);

    /// <summary>What config.json asks for: a sparse MoE block in the sparse layers of Mixtral, Qwen2-MoE and DeepSeek-MoE
    /// (<see cref="Moe.Sparse.SparseMoeConfig.IsSparseLayer"/>), the dense MLP elsewhere.</summary>
    public static DecoderMlp FromConfig(string layerName, int layerIndex, DecoderConfig config)
        => config.Moe is { } m && m.IsSparseLayer(layerIndex)
            ? new Moe.Sparse.SparseMoeBlock(layerName, layerIndex, config)
            : Dense(layerName, layerIndex, config);
}
