using MergeDsl.Bench.Data;

namespace MergeDsl.Bench.TextPool;

/// <summary>Settings of a text-pool run.</summary>
public sealed record TextPoolOptions
{
    /// <summary>Data folder (text cache and zoo).</summary>
    public required string DataRoot { get; init; }
    /// <summary>The CI variant: a smaller model, less text and fewer steps; every stage still runs.</summary>
    public bool Quick { get; init; }
    /// <summary>Zoo settings; its seed is replaced by each of <see cref="Seeds"/> in turn.</summary>
    public required TextZooSettings Zoo { get; init; }
    /// <summary>Seeds: one zoo and one set of rows each; tables report mean and spread over them.</summary>
    public required IReadOnlyList<int> Seeds { get; init; }
    /// <summary>Held-out domains (never merged, never trained on).</summary>
    public IReadOnlyList<string> HeldOut { get; init; } = TextDomains.All.Where(d => d.HeldOut).Select(d => d.Name).ToList();
    /// <summary>Task arithmetic λ grid.</summary>
    public IReadOnlyList<double> TaLambdas { get; init; } = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0];
    /// <summary>TIES and DARE-TIES λ grid.</summary>
    public IReadOnlyList<double> TiesLambdas { get; init; } = [0.05, 0.1, 0.2, 0.3, 0.6, 1.0];
    /// <summary>TIES density grid (fraction of each task vector kept).</summary>
    public IReadOnlyList<double> TiesDensities { get; init; } = [0.2, 0.5];
    /// <summary>DARE-TIES density grid (keep probability).</summary>
    public IReadOnlyList<double> DareDensities { get; init; } = [0.3, 0.6];
    /// <summary>Rows beyond the registry's static merges (e.g. dynamic merges), each added after them.</summary>
    public IReadOnlyList<ITextRowProducer> ExtraRows { get; init; } = [];
    /// <summary>Rows to run after Pretrained and Individual (names as in the table); null runs every row.</summary>
    public IReadOnlySet<string>? Methods { get; init; }
    /// <summary>Windows per scoring pass.</summary>
    public int EvalBatch { get; init; } = 32;
    /// <summary>Progress lines.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// The full pool, or its --quick variant: the full pool's zoo trains in about 10-20 minutes on 2 idle cores
    /// (see docs/results-text.md); --quick runs end to end in about two minutes.
    /// </summary>
    public static TextPoolOptions Create(string dataRoot, bool quick, IReadOnlyList<int> seeds, Action<string>? log = null,
        TextPoolOverrides? overrides = null)
    {
        var o = CreateDefault(dataRoot, quick, seeds, log);
        var v = overrides ?? new TextPoolOverrides();
        var zoo = o.Zoo with
        {
            Width = v.Width ?? o.Zoo.Width,
            Layers = v.Layers ?? o.Zoo.Layers,
            PretrainSteps = v.PretrainSteps ?? o.Zoo.PretrainSteps,
            FineTuneSteps = v.FineTuneSteps ?? o.Zoo.FineTuneSteps,
            Experts = v.Experts ?? o.Zoo.Experts,
        };
        // One-line messages naming the option, before any data is read.
        try { zoo.Validate(); }
        catch (ArgumentException e) { throw new ArgumentException($"textpool settings: {e.Message}"); }
        return o with { Zoo = zoo };
    }

    /// <summary>These options running only the rows named in <paramref name="methods"/> (after Pretrained and Individual).</summary>
    public TextPoolOptions WithMethods(IReadOnlySet<string> methods) => this with { Methods = methods };

    static TextPoolOptions CreateDefault(string dataRoot, bool quick, IReadOnlyList<int> seeds, Action<string>? log)
    {
        if (seeds.Count == 0) throw new ArgumentException("--seeds: at least one seed");
        if (seeds.Distinct().Count() != seeds.Count) throw new ArgumentException($"--seeds: repeated seed in {string.Join(",", seeds)}");
        if (!quick)
            return new TextPoolOptions { DataRoot = dataRoot, Zoo = new TextZooSettings(), Seeds = seeds, Log = log, ExtraRows = DynamicTextRows.Full() };
        return new TextPoolOptions
        {
            DataRoot = dataRoot, Quick = true, Seeds = seeds, Log = log,
            Zoo = new TextZooSettings
            {
                Width = 32, Layers = 2, Heads = 2, Context = 64, PretrainSteps = 80, PretrainBatch = 8, FineTuneSteps = 40, FineTuneBatch = 8,
                Sizes = new TextSplitSizes { TrainBytes = 32_768, ValidationBytes = 2_048, TestBytes = 2_048 },
            },
            TaLambdas = [0.3, 1.0], TiesLambdas = [0.3, 1.0], TiesDensities = [0.2], DareDensities = [0.5],
            ExtraRows = DynamicTextRows.Quick(),
        };
    }
}

/// <summary>Changes to the pool's default zoo (null: keep the default); what the scale study varies.</summary>
public sealed record TextPoolOverrides
{
    /// <summary>Model width.</summary>
    public int? Width { get; init; }
    /// <summary>Decoder layers.</summary>
    public int? Layers { get; init; }
    /// <summary>Pretraining steps (a weaker or stronger base).</summary>
    public int? PretrainSteps { get; init; }
    /// <summary>Fine-tuning steps per expert.</summary>
    public int? FineTuneSteps { get; init; }
    /// <summary>Held-in domains with an expert each.</summary>
    public IReadOnlyList<string>? Experts { get; init; }
}
