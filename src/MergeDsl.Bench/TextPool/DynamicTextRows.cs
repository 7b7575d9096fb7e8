using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Moe;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// The text pool's dynamic rows, in table order: AdaMerging (task-wise, layer-wise), WEMoE (the paper's entropy),
/// WEMoE with expert distillation (ours), E-WEMoE, SMILE, oracle routing. Grids are small because every setting of an
/// adaptive row is a whole adaptation on a 2-core CPU; docs/results-text.md gives their cost.
/// </summary>
public static class DynamicTextRows
{
    /// <summary>The full pool's rows.</summary>
    /// <remarks>
    /// A router step of the full pool's WEMoE (7 experts, 2 windows of 128 bytes per domain) costs about a second of one
    /// core, so its rows run 30 steps; λ (the routers' start and the rest recipe's) and the router learning rate are
    /// chosen on validation text. The grids reach below task arithmetic's choice (λ 0.02 in seed 42's zoo) and span
    /// two decades of learning rate, so a choice at a grid's edge is visible in the report rather than hidden.
    /// </remarks>
    public static IReadOnlyList<ITextRowProducer> Full() => Rows(steps: 30, adaSteps: 50, batch: 2, lambdas: [0.02, 0.05, 0.2],
        routerLrs: [3e-4, 3e-3], adaInit: [0.05, 0.3], adaLrs: [1e-4, 1e-3, 1e-2], smileRanks: [4, 8, 32]);

    /// <summary>The --quick rows: few steps, one setting each except SMILE's rank (so the validation choice runs).</summary>
    public static IReadOnlyList<ITextRowProducer> Quick() => Rows(steps: 10, adaSteps: 10, batch: 2, lambdas: [0.3], routerLrs: [1e-3],
        adaInit: [0.3], adaLrs: [1e-2], smileRanks: [4, 16]);

    static IReadOnlyList<ITextRowProducer> Rows(int steps, int adaSteps, int batch, IReadOnlyList<double> lambdas, IReadOnlyList<double> routerLrs,
        IReadOnlyList<double> adaInit, IReadOnlyList<double> adaLrs, IReadOnlyList<double> smileRanks) =>
    [
        new AdaMergingTextRow(AdaMergingGranularity.TaskWise, adaSteps, batch, adaInit, adaLrs),
        new AdaMergingTextRow(AdaMergingGranularity.LayerWise, adaSteps, batch, adaInit, adaLrs),
        new WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Entropy, steps, batch, lambdas, routerLrs),
        new WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Distillation, steps, batch, lambdas, routerLrs),
        new WeMoETextRow(MoeKind.EWeMoE, AdaptObjective.Entropy, steps, batch, lambdas, routerLrs),
        new SmileTextRow(smileRanks, lambdas),
        new OracleRoutingTextRow(lambdas),
    ];
}
