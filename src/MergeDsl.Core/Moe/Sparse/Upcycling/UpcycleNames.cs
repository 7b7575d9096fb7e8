namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// Hugging Face parameter names of an upcycled checkpoint's sparse blocks. Mixtral:
/// <c>model.layers.N.block_sparse_moe.gate.weight</c> and <c>…experts.i.w1/w3/w2.weight</c> (gate/up/down, the
/// per-expert layout transformers 4.x loads and 5.x converts on load). Qwen2-MoE and DeepSeek-MoE:
/// <c>model.layers.N.mlp.gate.weight</c>, <c>mlp.experts.i.{gate,up,down}_proj.weight</c>; the shared expert is
/// <c>mlp.shared_expert.*</c> with <c>mlp.shared_expert_gate.weight</c> (Qwen2-MoE) or <c>mlp.shared_experts.*</c> (DeepSeek).
/// </summary>
public static class UpcycleNames
{
    /// <summary>The dense MLP projections every input has, in (gate, up, down) order.</summary>
    public static readonly IReadOnlyList<string> DenseProjections = ["gate_proj", "up_proj", "down_proj"];

    /// <summary>A dense model's MLP weight: <c>model.layers.N.mlp.&lt;projection&gt;.weight</c>.</summary>
    public static string Dense(int layer, string projection) => $"model.layers.{layer}.mlp.{projection}.weight";

    /// <summary>The router weight [experts, hidden] of <paramref name="layer"/>.</summary>
    public static string Router(UpcycleArchitecture a, int layer) => a == UpcycleArchitecture.Mixtral
        ? $"model.layers.{layer}.block_sparse_moe.gate.weight"
        : $"model.layers.{layer}.mlp.gate.weight";

    /// <summary>Routed expert <paramref name="expert"/>'s weight for a dense <paramref name="projection"/> (gate_proj, up_proj, down_proj).</summary>
    public static string Expert(UpcycleArchitecture a, int layer, int expert, string projection) => a == UpcycleArchitecture.Mixtral
        ? $"model.layers.{layer}.block_sparse_moe.experts.{expert}.{MixtralProjection(projection)}.weight"
        : $"model.layers.{layer}.mlp.experts.{expert}.{projection}.weight";

    /// <summary>The shared expert's weight for a dense <paramref name="projection"/> (Qwen2-MoE and DeepSeek-MoE only).</summary>
    public static string Shared(UpcycleArchitecture a, int layer, string projection) => a switch
    {
        UpcycleArchitecture.Qwen2Moe => $"model.layers.{layer}.mlp.shared_expert.{projection}.weight",
        UpcycleArchitecture.DeepseekMoe => $"model.layers.{layer}.mlp.shared_experts.{projection}.weight",
        _ => throw new ArgumentException("Mixtral has no shared expert"),
    };

    /// <summary>Qwen2-MoE's shared-expert gate [1, hidden] of <paramref name="layer"/>.</summary>
    public static string SharedGate(int layer) => $"model.layers.{layer}.mlp.shared_expert_gate.weight";

    static string MixtralProjection(string projection) => projection switch
    {
        "gate_proj" => "w1",
        "down_proj" => "w2",
        "up_proj" => "w3",
        _ => throw new ArgumentException($"unknown MLP projection '{projection}'"),
    };
}
