using MergeDsl.Core.Checkpoints;

namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// What <see cref="UpcycleJob"/> builds: mergekit-moe's configuration. The base model gives the attention, norms,
/// embeddings and LM head; every expert gives one MLP per layer; routers come from <see cref="GateMode"/>.
/// </summary>
/// <param name="BaseModel">The dense base model folder (resolved).</param>
/// <param name="Experts">The routed experts, in router-row order.</param>
/// <param name="SharedExperts">Always-on experts (at most one; Qwen2-MoE needs exactly one, Mixtral none).</param>
/// <param name="GateMode">How router rows are initialised.</param>
/// <param name="ExpertsPerToken">Routed experts each token uses (<c>num_experts_per_tok</c>), 1 … the number of experts.</param>
/// <param name="DType">Output dtype (F32, F16 or BF16); null keeps the base's (the dtype of its embedding).</param>
/// <param name="Architecture">The output format; null infers it as mergekit does (Mixtral when possible).</param>
/// <param name="Seed">Seed of the random gate modes and of expert noise.</param>
/// <param name="AllowIdenticalExperts">Accept experts that are all the same model with a prompt-based gate mode
/// (mergekit's <c>--i-understand-this-is-not-useful-without-training</c>).</param>
public sealed record UpcycleSpec(
    string BaseModel,
    IReadOnlyList<UpcycleExpert> Experts,
    IReadOnlyList<UpcycleExpert> SharedExperts,
    GateMode GateMode = GateMode.Hidden,
    int ExpertsPerToken = 2,
    DType? DType = null,
    UpcycleArchitecture? Architecture = null,
    long Seed = 42,
    bool AllowIdenticalExperts = false)
{
    /// <summary>
    /// The checks that need no file: expert count and <c>experts_per_token</c>, prompts for the prompt-based gate modes,
    /// identical prompts, scales, dtype, and the shared experts against the chosen architecture.
    /// </summary>
    /// <exception cref="SettingException">The first problem, naming the mergekit key and value.</exception>
    public UpcycleSpec Validate()
    {
        if (Experts.Count == 0) throw new SettingException("experts", "give at least one expert");
        if (ExpertsPerToken < 1)
            throw new SettingException("experts_per_token", $"{ExpertsPerToken} is below 1");
        if (ExpertsPerToken > Experts.Count)
            throw new SettingException("experts_per_token", $"{ExpertsPerToken} is more than the {Experts.Count} expert(s)");
        if (DType is { } d && d is not (Checkpoints.DType.F32 or Checkpoints.DType.F16 or Checkpoints.DType.BF16))
            throw new SettingException("dtype", $"{DTypes.ToSafetensorsName(d)} is not an output dtype (expected float32, float16 or bfloat16)");
        if (SharedExperts.Count > 1)
            throw new SettingException("shared_experts", $"{SharedExperts.Count} shared experts given; at most one is supported (as mergekit)");
        foreach (var (e, where) in Experts.Select((e, i) => (e, $"experts[{i}]")).Concat(SharedExperts.Select((e, i) => (e, $"shared_experts[{i}]"))))
        {
            if (e.NoiseScale is { } n && !(n >= 0 && double.IsFinite(n)))
                throw new SettingException($"{where}.noise_scale", $"{n} is not a finite non-negative number");
            if (e.ResidualScale is { } r && !double.IsFinite(r))
                throw new SettingException($"{where}.residual_scale", $"{r} is not a finite number");
            if (e.PositivePrompts.Concat(e.NegativePrompts).Any(p => p.Length == 0))
                throw new SettingException(where, "an empty prompt");
        }
        if (GateMode.NeedsPrompts())
        {
            for (int i = 0; i < Experts.Count; i++)
                if (Experts[i].PositivePrompts.Count == 0)
                    throw new SettingException($"experts[{i}].positive_prompts", $"gate_mode {GateMode.Name()} needs positive prompts for every expert");
            string Key(UpcycleExpert e) => string.Join("\u0000", e.PositivePrompts) + "\u0001" + string.Join("\u0000", e.NegativePrompts);
            if (Experts.Count > 1 && Experts.All(e => Key(e) == Key(Experts[0])))
                throw new SettingException("experts", "every expert has the same positive and negative prompts, so the router cannot tell them apart");
            if (!AllowIdenticalExperts && Experts.Count > 1 && Experts.All(e => e.SourceModel == Experts[0].SourceModel))
                throw new SettingException("experts", "every expert is the same model, which gives the base model's output at a higher cost; allow identical experts (--i-understand-this-is-not-useful-without-training) to build it for training");
        }
        if (Architecture is { } a && Unsupported(a) is { } why)
            throw new SettingException("architecture", $"{a.Name()}: {why}");
        return this;
    }

    /// <summary>Why <paramref name="architecture"/> cannot hold this spec's shared experts, or null (model families are checked by the job).</summary>
    public string? Unsupported(UpcycleArchitecture architecture)
    {
        switch (architecture)
        {
            case UpcycleArchitecture.Mixtral when SharedExperts.Count > 0:
                return "Mixtral has no shared experts";
            case UpcycleArchitecture.DeepseekMoe when SharedExperts.Any(e => e.PositivePrompts.Count > 0 || e.NegativePrompts.Count > 0):
                return "DeepSeek MoE's shared expert has no gate, so it takes no prompts";
            case UpcycleArchitecture.Qwen2Moe when SharedExperts.Count != 1:
                return "Qwen MoE needs exactly one shared expert";
            case UpcycleArchitecture.Qwen2Moe when GateMode.NeedsPrompts() && SharedExperts[0].PositivePrompts.Count == 0:
                return $"Qwen MoE's shared expert gate needs positive prompts with gate_mode {GateMode.Name()}";
            default:
                return null;
        }
    }

    /// <summary>Every model the upcycle reads: the base, then the experts, then the shared experts.</summary>
    public IEnumerable<string> Models => Experts.Concat(SharedExperts).Select(e => e.SourceModel).Prepend(BaseModel);
}
