namespace MergeDsl.Core.Lora;

/// <summary>One extracted module: its rank and how much of ‖ΔW‖²_F the rank keeps.</summary>
/// <param name="Module">Module name (the weight without <c>.weight</c>).</param>
/// <param name="Rank">Rank written (the requested rank, or min(out, in) when smaller).</param>
/// <param name="Out">Rows of the weight.</param>
/// <param name="In">Columns of the weight.</param>
/// <param name="Energy">Σᵢ&lt;r σᵢ² / Σ σᵢ² of ΔW (1 when ΔW = 0).</param>
/// <param name="DeltaNorm">‖ΔW‖_F.</param>
public sealed record LoraModuleReport(string Module, int Rank, long Out, long In, double Energy, double DeltaNorm);

/// <summary>What <see cref="LoraExtractor.Extract"/> wrote and what it could not capture.</summary>
/// <param name="Modules">Every extracted module, in the model's order.</param>
/// <param name="SkippedEmbeddings">Embedding tensors that differ from the base (not in the adapter).</param>
/// <param name="DifferingOther">Other tensors (norms, biases, non-2-D) that differ from the base (not in the adapter).</param>
public sealed record LoraExtraction(IReadOnlyList<LoraModuleReport> Modules, IReadOnlyList<string> SkippedEmbeddings, IReadOnlyList<string> DifferingOther);
