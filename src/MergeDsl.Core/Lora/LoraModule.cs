namespace MergeDsl.Core.Lora;

/// <summary>One adapted Linear of a PEFT LoRA adapter.</summary>
/// <param name="Module">The module name in the base model, e.g. <c>model.layers.0.self_attn.q_proj</c>.</param>
/// <param name="Weight">The base tensor it changes (<c>Module + ".weight"</c>).</param>
/// <param name="A">The adapter tensor <c>lora_A</c> ([r, in]).</param>
/// <param name="B">The adapter tensor <c>lora_B</c> ([out, r]).</param>
/// <param name="Rank">r (from <c>rank_pattern</c> or <c>r</c>).</param>
/// <param name="Scale">alpha / r, or alpha / √r with <c>use_rslora</c>.</param>
/// <param name="FanInFanOut">The base weight is stored [in, out] (GPT-2's Conv1D), so the update is transposed.</param>
public sealed record LoraModule(string Module, string Weight, string A, string B, int Rank, double Scale, bool FanInFanOut);
