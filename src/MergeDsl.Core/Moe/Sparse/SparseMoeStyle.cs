namespace MergeDsl.Core.Moe.Sparse;

/// <summary>Which Hugging Face sparse MoE block a layer follows (names, router normalisation, shared experts).</summary>
public enum SparseMoeStyle
{
    /// <summary>Mixtral's <c>block_sparse_moe</c>: router <c>gate</c>, experts <c>experts.i.w1/w3/w2</c> (gate/up/down);
    /// the selected probabilities are always renormalised to sum to 1; no shared expert.</summary>
    Mixtral,
    /// <summary>Qwen2-MoE's <c>mlp</c>: router <c>gate</c>, experts <c>experts.i.{gate,up,down}_proj</c>, one
    /// <c>shared_expert</c> scaled per token by sigmoid(<c>shared_expert_gate</c>·x); renormalised only with <c>norm_topk_prob</c>.</summary>
    Qwen2Moe,
    /// <summary>DeepSeek-MoE v1's <c>mlp</c>: router <c>gate</c>, experts <c>experts.i.{gate,up,down}_proj</c>,
    /// always-on <c>shared_experts</c> (one MLP of width <c>moe_intermediate_size · n_shared_experts</c>) added ungated;
    /// renormalised with <c>norm_topk_prob</c> when more than one expert is chosen.</summary>
    DeepseekMoe,
}
