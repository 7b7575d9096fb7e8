using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// config.json of an upcycled checkpoint: the base's decoder fields with the sparse architecture's keys, as
/// transformers' <c>MixtralConfig</c>, <c>Qwen2MoeConfig</c> and DeepSeek-MoE's remote <c>DeepseekConfig</c> name them,
/// and the values mergekit-moe writes.
/// </summary>
public static class UpcycleConfigJson
{
    /// <summary>The safetensors dtype's <c>torch_dtype</c> name.</summary>
    public static string TorchDType(DType d) => d switch
    {
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => "float32",
    };

    /// <summary>
    /// The config object. Every format: the base's vocabulary, sizes, heads, rotary base and <c>rope_scaling</c>, norm
    /// epsilon, tying and special ids; no sliding window (mergekit turns it off). Mixtral: <c>num_local_experts</c>,
    /// <c>num_experts_per_tok</c>. Qwen2-MoE: <c>num_experts</c>, <c>num_experts_per_tok</c>,
    /// <c>decoder_sparse_step</c> 1, <c>mlp_only_layers</c> [], <c>norm_topk_prob</c> true,
    /// <c>moe_intermediate_size</c> = <c>shared_expert_intermediate_size</c> = the base's intermediate size,
    /// <c>qkv_bias</c> true. DeepSeek-MoE: <c>n_routed_experts</c>, <c>n_shared_experts</c> (null without one),
    /// <c>num_experts_per_tok</c>, <c>moe_intermediate_size</c>, <c>first_k_dense_replace</c> 0, <c>moe_layer_freq</c> 1,
    /// <c>scoring_func</c> softmax, <c>norm_topk_prob</c> true, and the <c>auto_map</c> of deepseek-moe-16b's remote code.
    /// </summary>
    public static JsonObject Build(UpcycleArchitecture a, DecoderConfig baseConfig, int experts, int shared, int expertsPerToken, DType dtype)
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(a.ClassName()),
            ["model_type"] = a.ModelType(),
            ["vocab_size"] = baseConfig.VocabSize,
            ["hidden_size"] = baseConfig.HiddenSize,
            ["intermediate_size"] = baseConfig.IntermediateSize,
            ["num_hidden_layers"] = baseConfig.NumHiddenLayers,
            ["num_attention_heads"] = baseConfig.NumAttentionHeads,
            ["num_key_value_heads"] = baseConfig.NumKeyValueHeads,
            ["head_dim"] = baseConfig.HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = baseConfig.MaxPositionEmbeddings,
            ["rms_norm_eps"] = baseConfig.RmsNormEps,
            ["rope_theta"] = baseConfig.RopeTheta,
            ["tie_word_embeddings"] = baseConfig.TieWordEmbeddings,
            ["torch_dtype"] = TorchDType(dtype),
            ["num_experts_per_tok"] = expertsPerToken,
        };
        if (baseConfig.RopeScaling is { } scaling) o["rope_scaling"] = scaling.ToJsonObject();
        if (baseConfig.BosTokenId is int bos) o["bos_token_id"] = bos;
        if (baseConfig.EosTokenId is int eos) o["eos_token_id"] = eos;
        switch (a)
        {
            case UpcycleArchitecture.Mixtral:
                o["num_local_experts"] = experts;
                o["sliding_window"] = null;
                break;
            case UpcycleArchitecture.Qwen2Moe:
                o["num_experts"] = experts;
                o["decoder_sparse_step"] = 1;
                o["mlp_only_layers"] = new JsonArray();
                o["norm_topk_prob"] = true;
                o["moe_intermediate_size"] = baseConfig.IntermediateSize;
                o["shared_expert_intermediate_size"] = baseConfig.IntermediateSize;
                o["use_sliding_window"] = false;
                o["sliding_window"] = null;
                o["qkv_bias"] = true;
                break;
            case UpcycleArchitecture.DeepseekMoe:
                o["n_routed_experts"] = experts;
                o["n_shared_experts"] = shared > 0 ? shared : null;
                o["moe_intermediate_size"] = baseConfig.IntermediateSize;
                o["first_k_dense_replace"] = 0;
                o["moe_layer_freq"] = 1;
                o["scoring_func"] = "softmax";
                o["norm_topk_prob"] = true;
                o["attention_bias"] = false;
                o["auto_map"] = new JsonObject
                {
                    ["AutoConfig"] = "deepseek-ai/deepseek-moe-16b-base--configuration_deepseek.DeepseekConfig",
                    ["AutoModel"] = "deepseek-ai/deepseek-moe-16b-base--modeling_deepseek.DeepseekModel",
                    ["AutoModelForCausalLM"] = "deepseek-ai/deepseek-moe-16b-base--modeling_deepseek.DeepseekForCausalLM",
                };
                break;
        }
        return o;
    }

    /// <summary>Indented JSON text of <see cref="Build"/>.</summary>
    public static string Text(UpcycleArchitecture a, DecoderConfig baseConfig, int experts, int shared, int expertsPerToken, DType dtype)
        => Build(a, baseConfig, experts, shared, expertsPerToken, dtype).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
