using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Moe;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// WEMoE or E-WEMoE on the text pool: every decoder MLP is upscaled (<see cref="DecoderUpscaler"/>; routes per token,
/// so the model stays causal), the other parameters are task arithmetic with λ, routers start at λ, and only the
/// routers are trained (<see cref="DecoderRouterAdaptation"/>) on the held-in domains' unlabelled test text, with the
/// paper's label-free entropy of next-byte distributions, or with this project's expert distillation (KL from each
/// domain's expert on that domain's windows: it uses each batch's domain identity and the experts' predictions).
/// λ and the learning rate are chosen on validation text.
/// </summary>
/// <param name="Kind">WEMoE or E-WEMoE (E-WEMoE: task vectors kept at 10 % density, one router shared by all layers).</param>
/// <param name="Objective">Entropy (the paper) or distillation (ours).</param>
/// <param name="Steps">Adam steps.</param>
/// <param name="BatchPerTask">Windows per domain per step.</param>
/// <param name="Lambdas">Rest-recipe (and initial routing) λ to choose among.</param>
/// <param name="LearningRates">Learning rates to choose among.</param>
public sealed record WeMoETextRow(MoeKind Kind, AdaptObjective Objective, int Steps, int BatchPerTask, IReadOnlyList<double> Lambdas,
    IReadOnlyList<double> LearningRates) : ITextRowProducer
{
    /// <summary>E-WEMoE's kept fraction of each task-vector tensor.</summary>
    public const double EWeMoEDensity = 0.1;

    /// <inheritdoc/>
    public string Method => (Kind, Objective) switch
    {
        (MoeKind.WeMoE, AdaptObjective.Entropy) => "WEMoE",
        (MoeKind.WeMoE, AdaptObjective.Distillation) => "WEMoE (expert distillation, ours)",
        (MoeKind.EWeMoE, AdaptObjective.Entropy) => "E-WEMoE",
        _ => $"{UpscaleSpec.KindName(Kind)} ({EntropyObjective.Name(Objective)})",
    };

    /// <inheritdoc/>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Grid => TextRowSources.Grid(("lambda", Lambdas), ("lr", LearningRates));

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Fixed
    {
        get
        {
            var f = new Dictionary<string, string>
            {
                ["objective"] = EntropyObjective.Name(Objective), ["steps"] = $"{Steps}", ["batch_per_domain"] = $"{BatchPerTask}",
                ["upscaled"] = "every decoder MLP (gate/up/down), routed per token", ["router_depth"] = "2",
                ["adaptation_text"] = "held-in domains' test text, unlabelled",
            };
            if (Kind == MoeKind.EWeMoE) { f["task_vector_density"] = TextRowSources.Text(EWeMoEDensity); f["shared_router"] = "true"; }
            if (Objective == AdaptObjective.Distillation) f["uses"] = "each batch's domain identity and that domain's expert's next-byte predictions";
            return f;
        }
    }

    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting)
    {
        double lambda = TextRowSources.Number(setting, "lambda");
        DecoderMoeModel moe;
        using (var sources = new TextRowSources(inputs))
        {
            var spec = new UpscaleSpec
            {
                Kind = Kind, Modules = ["*.mlp"], RouterDepth = 2, InitLambda = lambda, RestLambda = lambda, Seed = inputs.Seed + 11,
                ExpertNames = inputs.ExpertDomains,
                KeepFraction = Kind == MoeKind.EWeMoE ? EWeMoEDensity : null, SharedRouter = Kind == MoeKind.EWeMoE,
            };
            moe = DecoderUpscaler.Upscale(sources.Config, sources.Base, sources.Experts, spec);
        }
        try
        {
            var options = new AdaptOptions
            {
                Steps = Steps, BatchPerTask = BatchPerTask, LearningRate = TextRowSources.Number(setting, "lr"),
                Seed = inputs.Seed, Objective = Objective,
            };
            using var teachers = Objective == AdaptObjective.Distillation ? TextRowSources.Teachers(inputs) : null;
            DecoderRouterAdaptation.Run(moe, TextRowSources.AdaptationText(inputs), moe.Model.Config.MaxPositionEmbeddings, options,
                teacher: teachers?.AsFunction());
            return moe.Model;
        }
        catch
        {
            moe.Model.Dispose();
            throw;
        }
    }
}
