using MergeDsl.Bench.Data;

namespace MergeDsl.Bench.TextPool;

/// <summary>One row of one seed's run.</summary>
/// <param name="Method">Row name.</param>
/// <param name="Scores">Test scores per domain, in <see cref="TextPoolRun.Domains"/> order.</param>
/// <param name="Seconds">Wall time of the row (building, choosing on validation, scoring).</param>
/// <param name="Chosen">The setting chosen on validation text (empty when there was no choice).</param>
/// <param name="Validation">Mean held-in validation bits per byte of every setting tried, by its description.</param>
/// <param name="Notes">What else happened (e.g. which expert a held-out domain used).</param>
public sealed record TextRowResult(string Method, IReadOnlyList<TextScore> Scores, double Seconds,
    IReadOnlyDictionary<string, string> Chosen, IReadOnlyDictionary<string, double> Validation, string Notes = "");

/// <summary>Everything one seed's run measured.</summary>
/// <param name="Seed">Zoo and method seed.</param>
/// <param name="Domains">Every domain, held-in first.</param>
/// <param name="Rows">Rows in table order.</param>
/// <param name="Stages">Wall time per stage.</param>
/// <param name="ZooFolder">Where the zoo is cached.</param>
/// <param name="ZooFromCache">True when the zoo was not trained in this run.</param>
/// <param name="ZooTrainSeconds">Training seconds per stage, measured when the zoo was built.</param>
/// <param name="ExpertMatrix">Test bits per byte of each expert (rows, expert order) on each domain (columns; held-in own domain and held-out domains only, NaN elsewhere).</param>
public sealed record TextPoolRun(int Seed, IReadOnlyList<TextDomain> Domains, IReadOnlyList<TextRowResult> Rows,
    IReadOnlyList<(string Stage, double Seconds)> Stages, string ZooFolder, bool ZooFromCache,
    IReadOnlyDictionary<string, double> ZooTrainSeconds, double[][] ExpertMatrix)
{
    /// <summary>A row by name, or null.</summary>
    public TextRowResult? Find(string method) => Rows.FirstOrDefault(r => r.Method == method);
}

/// <summary>A text-pool run over one or more seeds.</summary>
/// <param name="Runs">One run per seed.</param>
/// <param name="Data">Where each domain's splits came from.</param>
/// <param name="Machine">The machine, in words.</param>
/// <param name="Quick">True for the CI variant.</param>
/// <param name="Settings">The run's settings, as text.</param>
public sealed record TextPoolResult(IReadOnlyList<TextPoolRun> Runs, IReadOnlyList<TextSplitInfo> Data, string Machine, bool Quick,
    IReadOnlyDictionary<string, string> Settings)
{
    /// <summary>Every domain, held-in first.</summary>
    public IReadOnlyList<TextDomain> Domains => Runs[0].Domains;

    /// <summary>Row names, in table order.</summary>
    public IReadOnlyList<string> Methods => Runs[0].Rows.Select(r => r.Method).ToList();

    /// <summary>Total wall time over all seeds.</summary>
    public double TotalSeconds => Runs.Sum(r => r.Stages.Sum(s => s.Seconds));
}
