namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>The sparse-MoE checkpoint formats an upcycle writes (mergekit-moe's output architectures).</summary>
public enum UpcycleArchitecture
{
    /// <summary><c>MixtralForCausalLM</c>: routed experts only; Llama or Mistral inputs.</summary>
    Mixtral,
    /// <summary>
    /// <c>DeepseekForCausalLM</c> (DeepSeek-MoE v1, remote code in transformers): at most one ungated shared expert;
    /// Llama or Mistral inputs.
    /// </summary>
    DeepseekMoe,
    /// <summary><c>Qwen2MoeForCausalLM</c>: exactly one shared expert with its sigmoid gate; Llama, Mistral or Qwen2 inputs.</summary>
    Qwen2Moe,
}

/// <summary>Names of <see cref="UpcycleArchitecture"/> values.</summary>
public static class UpcycleArchitectures
{
    /// <summary>Every architecture with mergekit's display name, in mergekit's order of preference.</summary>
    public static readonly IReadOnlyList<(UpcycleArchitecture Architecture, string Name)> All =
    [
        (UpcycleArchitecture.Mixtral, "Mixtral"),
        (UpcycleArchitecture.DeepseekMoe, "DeepSeek MoE"),
        (UpcycleArchitecture.Qwen2Moe, "Qwen MoE"),
    ];

    /// <summary>mergekit's display name.</summary>
    public static string Name(this UpcycleArchitecture a) => All.First(x => x.Architecture == a).Name;

    /// <summary>The config.json <c>architectures</c> entry.</summary>
    public static string ClassName(this UpcycleArchitecture a) => a switch
    {
        UpcycleArchitecture.Mixtral => "MixtralForCausalLM",
        UpcycleArchitecture.DeepseekMoe => "DeepseekForCausalLM",
        _ => "Qwen2MoeForCausalLM",
    };

    /// <summary>The config.json <c>model_type</c>.</summary>
    public static string ModelType(this UpcycleArchitecture a) => a switch
    {
        UpcycleArchitecture.Mixtral => "mixtral",
        UpcycleArchitecture.DeepseekMoe => "deepseek",
        _ => "qwen2_moe",
    };

    /// <summary>
    /// The architectures an <c>architecture:</c> value selects: as mergekit, those whose display name starts with it,
    /// ignoring case ("qwen" selects Qwen MoE, "deepseek" DeepSeek MoE). mergekit's "Qwen3 MoE" is not written here,
    /// so "qwen3" selects nothing.
    /// </summary>
    /// <exception cref="SettingException">Nothing matches (the message lists the names).</exception>
    public static IReadOnlyList<UpcycleArchitecture> Select(string name)
    {
        var found = All.Where(a => a.Name.StartsWith(name.Trim(), StringComparison.OrdinalIgnoreCase)).Select(a => a.Architecture).ToList();
        if (name.Trim().Length == 0 || found.Count == 0)
            throw new SettingException("architecture", $"unknown output architecture '{name}' (expected one of: {string.Join(", ", All.Select(a => a.Name))}, or a prefix such as mixtral, qwen, deepseek)");
        return found;
    }
}
