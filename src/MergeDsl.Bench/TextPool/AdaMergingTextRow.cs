using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// AdaMerging (task-wise or layer-wise) on the text pool: <see cref="DecoderAdaMerging"/> learns task-arithmetic
/// coefficients (clamped to [0, 1]) by minimising the entropy of next-byte distributions on the held-in
/// domains' unlabelled test text (<see cref="TextRowSources.AdaptationText"/>); the initial λ and the learning rate are chosen on validation text.
/// </summary>
/// <param name="Granularity">Task-wise or layer-wise coefficients.</param>
/// <param name="Steps">Adam steps.</param>
/// <param name="BatchPerTask">Windows per domain per step.</param>
/// <param name="InitLambdas">Initial coefficients to choose among.</param>
/// <param name="LearningRates">Learning rates to choose among.</param>
public sealed record AdaMergingTextRow(AdaMergingGranularity Granularity, int Steps, int BatchPerTask, IReadOnlyList<double> InitLambdas,
    IReadOnlyList<double> LearningRates)
    : ITextRowProducer
{
    /// <inheritdoc/>
    public string Method => Granularity == AdaMergingGranularity.TaskWise ? "AdaMerging (task-wise)" : "AdaMerging (layer-wise)";

    /// <inheritdoc/>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Grid => TextRowSources.Grid(("init_lambda", InitLambdas), ("lr", LearningRates));

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Fixed => new Dictionary<string, string>
    {
        ["objective"] = "entropy", ["steps"] = $"{Steps}", ["batch_per_domain"] = $"{BatchPerTask}",
        ["clamp"] = "[0, 1]", ["adaptation_text"] = "held-in domains' test text, unlabelled",
    };

    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting)
    {
        using var sources = new TextRowSources(inputs);
        var options = new AdaptOptions
        {
            Steps = Steps, BatchPerTask = BatchPerTask, LearningRate = TextRowSources.Number(setting, "lr"),
            Seed = inputs.Seed, Objective = AdaptObjective.Entropy,
        };
        var r = DecoderAdaMerging.Run(sources.Config, sources.Base, sources.Experts, TextRowSources.AdaptationText(inputs),
            sources.Config.MaxPositionEmbeddings, options,
            new AdaMergingOptions(Granularity, TextRowSources.Number(setting, "init_lambda"), Clamp: true));
        r.Lambdas.Dispose();
        return r.Model;
    }
}
