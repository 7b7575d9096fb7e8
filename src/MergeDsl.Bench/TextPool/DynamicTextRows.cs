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
    /// Every setting of an adaptive row is a whole adaptation (the WEMoE row's six settings took 300 s together on the
    /// shared 2-core machine, seed 42), so the rows run 30 or 50 steps; λ (the routers' start and the rest recipe's),
    /// the router learning rate, AdaMerging's start and lr and SMILE's rank are chosen on validation text. The grids
    /// reach below the values the first version chose at its grids' lower edges, so a choice at an edge shows.
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
