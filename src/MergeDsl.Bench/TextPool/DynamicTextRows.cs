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
    /// A router step of the full pool's WEMoE (7 experts, 4 windows of 128 bytes per domain) took 2.8 s of one core
    /// here (`mergedsl adapt --text-data`, 10 steps), so its rows run 30 steps of 2 windows, try λ only, and fix the
    /// router learning rate a priori (3e-3: 30 Adam steps then move a route by up to ≈ 0.1, the size of λ);
    /// AdaMerging's steps are cheap enough to also choose its lr.
    /// </remarks>
    public static IReadOnlyList<ITextRowProducer> Full() => Rows(steps: 30, adaSteps: 50, batch: 2, lambdas: [0.05, 0.2], routerLrs: [3e-3],
        adaLrs: [1e-3, 1e-2], smileRanks: [8, 32]);

    /// <summary>The --quick rows: few steps, one setting each except SMILE's rank (so the validation choice runs).</summary>
    public static IReadOnlyList<ITextRowProducer> Quick() => Rows(steps: 10, adaSteps: 10, batch: 2, lambdas: [0.3], routerLrs: [1e-3],
        adaLrs: [1e-2], smileRanks: [4, 16]);

    static IReadOnlyList<ITextRowProducer> Rows(int steps, int adaSteps, int batch, IReadOnlyList<double> lambdas, IReadOnlyList<double> routerLrs,
        IReadOnlyList<double> adaLrs, IReadOnlyList<double> smileRanks) =>
    [
        new AdaMergingTextRow(AdaMergingGranularity.TaskWise, adaSteps, batch, adaLrs),
        new AdaMergingTextRow(AdaMergingGranularity.LayerWise, adaSteps, batch, adaLrs),
        new WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Entropy, steps, batch, lambdas, routerLrs),
        new WeMoETextRow(MoeKind.WeMoE, AdaptObjective.Distillation, steps, batch, lambdas, routerLrs),
        new WeMoETextRow(MoeKind.EWeMoE, AdaptObjective.Entropy, steps, batch, lambdas, routerLrs),
        new SmileTextRow(smileRanks, lambdas),
        new OracleRoutingTextRow(lambdas),
    ];
}
