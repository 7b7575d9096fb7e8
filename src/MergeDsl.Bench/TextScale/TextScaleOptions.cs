using MergeDsl.Bench.TextPool;

namespace MergeDsl.Bench.TextScale;

/// <summary>
/// Settings of the scale study: the text pool's zoo trained at several widths and with a weaker and a stronger base,
/// then merged over nested subsets of its experts (the questions of "What Matters for Model Merging at Scale?").
/// </summary>
public sealed record TextScaleOptions
{
    /// <summary>Data folder (text cache and zoos, shared with <c>bench textpool</c>).</summary>
    public required string DataRoot { get; init; }
    /// <summary>The CI variant: tiny widths, few steps and small grids; every stage still runs.</summary>
    public bool Quick { get; init; }
    /// <summary>Zoo and method seed (also orders the experts for the nested subsets).</summary>
    public int Seed { get; init; } = 42;
    /// <summary>Everything of the zoo that the study does not vary (layers, heads, context, fine-tuning, split sizes).</summary>
    public required TextZooSettings Zoo { get; init; }
    /// <summary>Model widths (<c>hidden_size</c>), smallest first.</summary>
    public IReadOnlyList<int> Widths { get; init; } = [32, 64, 128];
    /// <summary>Pretraining steps of the weaker and the stronger base, in that order.</summary>
    public IReadOnlyList<int> PretrainSteps { get; init; } = [125, 500];
    /// <summary>Numbers of experts merged (each a prefix of one seeded order of the held-in domains).</summary>
    public IReadOnlyList<int> ExpertCounts { get; init; } = [2, 4, 6, 7];
    /// <summary>Task arithmetic λ grid (its choice is also WEMoE's initial and rest λ).</summary>
    public IReadOnlyList<double> TaLambdas { get; init; } = [0.02, 0.05, 0.1, 0.2, 0.4];
    /// <summary>TIES λ grid.</summary>
    public IReadOnlyList<double> TiesLambdas { get; init; } = [0.1, 0.3, 0.6];
    /// <summary>TIES density grid.</summary>
    public IReadOnlyList<double> TiesDensities { get; init; } = [0.2];
    /// <summary>WEMoE router steps.</summary>
    public int WeMoESteps { get; init; } = 20;
    /// <summary>
    /// WEMoE router learning-rate grid. The default is the one rate the full text pool chose on its validation split
    /// (3e-3 collapsed the entropy objective there): the study spends its time on widths and expert counts instead.
    /// </summary>
    public IReadOnlyList<double> WeMoELrs { get; init; } = [3e-4];
    /// <summary>Rows to run after Pretrained and Individual (names as in the tables); null runs <see cref="DefaultMethods"/>.</summary>
    public IReadOnlySet<string>? Methods { get; init; }
    /// <summary>Windows per scoring pass.</summary>
    public int EvalBatch { get; init; } = 32;
    /// <summary>Progress lines.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>The row names a study can run, in table order.</summary>
    public static IReadOnlyList<string> MethodNames { get; } =
        ["Simple Average", "Task Arithmetic", "TIES-Merging", "WEMoE", "WEMoE (expert distillation, ours)"];

    /// <summary>The rows the study runs unless told otherwise: the issue's four methods (WEMoE with the paper's objective).</summary>
    public static IReadOnlySet<string> DefaultMethods { get; } = new HashSet<string>(["Simple Average", "Task Arithmetic", "TIES-Merging", "WEMoE"]);

    /// <summary>
    /// The full study or its --quick variant, with the command line's changes (null keeps the default); refuses
    /// settings that cannot run with one line naming the option.
    /// </summary>
    public static TextScaleOptions Create(string dataRoot, bool quick, int seed, Action<string>? log = null,
        IReadOnlyList<int>? widths = null, IReadOnlyList<int>? pretrainSteps = null, IReadOnlyList<int>? expertCounts = null,
        IReadOnlySet<string>? methods = null)
    {
        var pool = TextPoolOptions.Create(dataRoot, quick, [seed]);
        var o = new TextScaleOptions { DataRoot = dataRoot, Quick = quick, Seed = seed, Zoo = pool.Zoo with { Seed = seed }, Log = log };
        if (quick)
            o = o with
            {
                Widths = [16, 32], PretrainSteps = [20, 80], ExpertCounts = [2, 4],
                TaLambdas = [0.3, 1.0], TiesLambdas = [0.3], WeMoESteps = 5, WeMoELrs = [1e-3],
            };
        o = o with
        {
            Widths = widths ?? o.Widths, PretrainSteps = pretrainSteps ?? o.PretrainSteps, ExpertCounts = expertCounts ?? o.ExpertCounts,
            Methods = methods ?? DefaultMethods,
        };
        return o.Validate();
    }

    /// <summary>Refuses settings that cannot run (one line naming the option and the value).</summary>
    public TextScaleOptions Validate()
    {
        if (Widths.Count == 0) throw new ArgumentException("--widths: at least one width");
        foreach (var w in Widths)
        {
            try { (Zoo with { Width = w }).Validate(); }
            catch (ArgumentException e) { throw new ArgumentException($"--widths: {e.Message}"); }
        }
        if (Widths.Distinct().Count() != Widths.Count) throw new ArgumentException($"--widths: repeated width in {string.Join(",", Widths)}");
        if (PretrainSteps.Count == 0 || PretrainSteps.Any(s => s <= 0))
            throw new ArgumentException($"--pretrain-steps: expected positive step counts, got {string.Join(",", PretrainSteps)}");
        if (PretrainSteps.Distinct().Count() != PretrainSteps.Count)
            throw new ArgumentException($"--pretrain-steps: repeated count in {string.Join(",", PretrainSteps)}");
        int n = Zoo.Experts.Count;
        foreach (var k in ExpertCounts)
            if (k < 1 || k > n) throw new ArgumentException($"--expert-counts: {k} experts; the pool has 1 to {n} held-in domains");
        if (ExpertCounts.Count == 0 || ExpertCounts.Distinct().Count() != ExpertCounts.Count)
            throw new ArgumentException($"--expert-counts: expected distinct counts, got {string.Join(",", ExpertCounts)}");
        if (Methods is not null)
            foreach (var m in Methods)
                if (!MethodNames.Contains(m)) throw new ArgumentException($"--methods: unknown row '{m}' (rows: {string.Join(", ", MethodNames)})");
        return this;
    }

    /// <summary>The held-in domains in the seeded order whose prefixes are the merged subsets.</summary>
    public IReadOnlyList<string> ExpertOrder() => ExpertOrderOf(Zoo.Experts, Seed);

    /// <summary>A Fisher-Yates shuffle of <paramref name="experts"/> by <paramref name="seed"/> (stable across runs).</summary>
    public static IReadOnlyList<string> ExpertOrderOf(IReadOnlyList<string> experts, int seed)
    {
        var order = experts.ToArray();
        var rng = new Random(seed);
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }
}
