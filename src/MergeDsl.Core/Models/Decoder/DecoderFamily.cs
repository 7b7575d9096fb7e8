namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// The Hugging Face decoder families the runtime implements. They share one layout
/// (<c>model.embed_tokens</c>, <c>model.layers.N.{input_layernorm, self_attn, post_attention_layernorm, mlp}</c>,
/// <c>model.norm</c>, <c>lm_head</c>) and differ in defaults and biases.
/// </summary>
public enum DecoderFamily
{
    /// <summary><c>LlamaForCausalLM</c>, model_type <c>llama</c>: optional biases (<c>attention_bias</c>, <c>mlp_bias</c>).</summary>
    Llama,
    /// <summary><c>MistralForCausalLM</c>, model_type <c>mistral</c>: no biases, optional <c>sliding_window</c>.</summary>
    Mistral,
    /// <summary><c>Qwen2ForCausalLM</c>, model_type <c>qwen2</c>: q/k/v projections always carry a bias, o_proj never.</summary>
    Qwen2,
    /// <summary><c>MixtralForCausalLM</c>, model_type <c>mixtral</c>: Mistral's attention with a sparse MoE block
    /// (<c>block_sparse_moe</c>) in every layer.</summary>
    Mixtral,
    /// <summary><c>Qwen2MoeForCausalLM</c>, model_type <c>qwen2_moe</c>: Qwen2's attention with sparse MoE blocks
    /// (routed experts plus a sigmoid-gated shared expert).</summary>
    Qwen2Moe,
    /// <summary><c>DeepseekForCausalLM</c>, model_type <c>deepseek</c>: DeepSeek-MoE v1, Llama's attention with
    /// fine-grained routed experts and always-on shared experts.</summary>
    DeepseekMoe,
}

/// <summary>Names of <see cref="DecoderFamily"/> values as they appear in config.json.</summary>
public static class DecoderFamilies
{
    /// <summary>The <c>architectures</c> entry and <c>model_type</c> of each family.</summary>
    public static readonly IReadOnlyList<(DecoderFamily Family, string Architecture, string ModelType)> All =
    [
        (DecoderFamily.Llama, "LlamaForCausalLM", "llama"),
        (DecoderFamily.Mistral, "MistralForCausalLM", "mistral"),
        (DecoderFamily.Qwen2, "Qwen2ForCausalLM", "qwen2"),
        (DecoderFamily.Mixtral, "MixtralForCausalLM", "mixtral"),
        (DecoderFamily.Qwen2Moe, "Qwen2MoeForCausalLM", "qwen2_moe"),
        (DecoderFamily.DeepseekMoe, "DeepseekForCausalLM", "deepseek"),
    ];

    /// <summary>The family whose class name is <paramref name="architecture"/>, or null.</summary>
    public static DecoderFamily? FromArchitecture(string architecture)
        => All.Where(a => a.Architecture == architecture).Select(a => (DecoderFamily?)a.Family).FirstOrDefault();

    /// <summary>The family whose <c>model_type</c> is <paramref name="modelType"/>, or null.</summary>
    public static DecoderFamily? FromModelType(string modelType)
        => All.Where(a => a.ModelType == modelType).Select(a => (DecoderFamily?)a.Family).FirstOrDefault();

    /// <summary>The <c>architectures</c> entry of a family.</summary>
    public static string Architecture(this DecoderFamily f) => All.First(a => a.Family == f).Architecture;

    /// <summary>The <c>model_type</c> of a family.</summary>
    public static string ModelType(this DecoderFamily f) => All.First(a => a.Family == f).ModelType;

    /// <summary>The dense family whose attention (biases, defaults) a family shares: Mixtral → Mistral,
    /// Qwen2-MoE → Qwen2, DeepSeek-MoE → Llama; a dense family is its own.</summary>
    public static DecoderFamily AttentionFamily(this DecoderFamily f) => f switch
    {
        DecoderFamily.Mixtral => DecoderFamily.Mistral,
        DecoderFamily.Qwen2Moe => DecoderFamily.Qwen2,
        DecoderFamily.DeepseekMoe => DecoderFamily.Llama,
        _ => f,
    };
}
