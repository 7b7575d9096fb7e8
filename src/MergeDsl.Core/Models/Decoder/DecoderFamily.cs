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
}
