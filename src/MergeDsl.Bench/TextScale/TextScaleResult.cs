namespace MergeDsl.Bench.TextScale;

/// <summary>
/// One row of one configuration of the study: a method merging the first <see cref="Experts"/> experts of one zoo.
/// Bits per byte are test-text means; the normalised scores are ratios of bits per byte, so 1 is a reference's
/// quality and below 1 is worse (a merged model with 10 % more bits per byte than the experts scores ≈ 0.91).
/// </summary>
/// <param name="Width">The zoo's model width.</param>
/// <param name="Parameters">The model's parameter count.</param>
/// <param name="PretrainSteps">The base's pretraining steps.</param>
/// <param name="Base">"weak" or "strong" (the fewer or the more pretraining steps).</param>
/// <param name="Experts">The merged experts' domains.</param>
/// <param name="Method">Row name (Pretrained and Individual are references).</param>
/// <param name="HeldIn">Mean bits per byte over the merged experts' domains.</param>
/// <param name="HeldOut">Mean bits per byte over the held-out domains.</param>
/// <param name="NormalisedHeldIn">Mean over the merged domains of the domain's expert's bits per byte divided by this row's.</param>
/// <param name="NormalisedHeldOut">Mean over held-out domains of the best merged expert's bits per byte (chosen on validation text) divided by this row's.</param>
/// <param name="HeldOutVsPretrained">Mean over held-out domains of the base's bits per byte divided by this row's (the paper's held-out normalisation).</param>
/// <param name="Chosen">Settings chosen on validation text, and fixed settings.</param>
/// <param name="Seconds">Wall time of the row.</param>
public sealed record TextScalePoint(int Width, long Parameters, int PretrainSteps, string Base, IReadOnlyList<string> Experts, string Method,
    double HeldIn, double HeldOut, double NormalisedHeldIn, double NormalisedHeldOut, double HeldOutVsPretrained,
    IReadOnlyDictionary<string, string> Chosen, double Seconds);

/// <summary>One zoo of the study.</summary>
/// <param name="Width">Model width.</param>
/// <param name="PretrainSteps">Pretraining steps.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="Folder">Cache folder.</param>
/// <param name="FromCache">True when no training ran in this call.</param>
/// <param name="TrainSeconds">Training seconds per stage, measured when the zoo was built.</param>
public sealed record TextScaleZoo(int Width, int PretrainSteps, long Parameters, string Folder, bool FromCache, IReadOnlyDictionary<string, double> TrainSeconds);

/// <summary>Everything the study measured.</summary>
/// <param name="Points">Every row of every configuration.</param>
/// <param name="Zoos">The zoos, in run order.</param>
/// <param name="ExpertOrder">The seeded order of held-in domains; a configuration with k experts merges its first k.</param>
/// <param name="HeldOut">The held-out domains.</param>
/// <param name="Machine">The machine, in words.</param>
/// <param name="Quick">True for the CI variant.</param>
/// <param name="Seed">Zoo and method seed.</param>
/// <param name="Settings">The run's settings, as text.</param>
/// <param name="Stages">Wall time per stage.</param>
public sealed record TextScaleResult(IReadOnlyList<TextScalePoint> Points, IReadOnlyList<TextScaleZoo> Zoos, IReadOnlyList<string> ExpertOrder,
    IReadOnlyList<string> HeldOut, string Machine, bool Quick, int Seed, IReadOnlyDictionary<string, string> Settings,
    IReadOnlyList<(string Stage, double Seconds)> Stages)
{
    /// <summary>Row names in table order (references first).</summary>
    public IReadOnlyList<string> Methods => Points.Select(p => p.Method).Distinct().ToList();

    /// <summary>Total wall time.</summary>
    public double TotalSeconds => Stages.Sum(s => s.Seconds);
}
