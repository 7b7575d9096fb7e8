namespace MergeDsl.Bench.TaskPool;

/// <summary>One row of the benchmark table (one seed's, or the mean over seeds).</summary>
/// <param name="Method">Display name (e.g. "Task Arithmetic").</param>
/// <param name="Accuracy">Top-1 test accuracy in percent per task, in task order.</param>
/// <param name="Seconds">Wall time of choosing the setting on validation images, building/adapting and evaluating the method.</param>
/// <param name="Config">Hyper-parameters, as text (the chosen ones where there was a choice).</param>
/// <param name="Notes">What happened (e.g. adaptation steps, collapse guard).</param>
public sealed record MethodResult(string Method, IReadOnlyList<double> Accuracy, double Seconds,
    IReadOnlyDictionary<string, string> Config, string Notes = "")
{
    /// <summary>Mean accuracy over the tasks.</summary>
    public double Average => Accuracy.Count == 0 ? double.NaN : Accuracy.Average();

    /// <summary>Mean validation accuracy (percent) of every setting tried, by its description; empty when nothing was chosen.</summary>
    public IReadOnlyDictionary<string, double> Validation { get; init; } = new Dictionary<string, double>();
}

/// <summary>Everything one seed's run measured (its own zoo and method seeds).</summary>
/// <param name="Seed">Zoo seed; the methods' seeds are derived from it.</param>
/// <param name="Methods">Rows in table order.</param>
/// <param name="Stages">Wall time per stage.</param>
/// <param name="ZooFolder">Where the zoo is cached.</param>
/// <param name="ZooFromCache">True when the zoo was not trained in this run.</param>
/// <param name="ZooTrainSeconds">Training seconds per zoo stage, measured when the zoo was built.</param>
public sealed record SeedRun(int Seed, IReadOnlyList<MethodResult> Methods, IReadOnlyList<(string Stage, double Seconds)> Stages,
    string ZooFolder, bool ZooFromCache, IReadOnlyDictionary<string, double> ZooTrainSeconds)
{
    /// <summary>A row by name, or null.</summary>
    public MethodResult? Find(string method) => Methods.FirstOrDefault(m => m.Method == method);
}

/// <summary>Everything a benchmark run measured, over one or more seeds.</summary>
/// <param name="Tasks">Task names, in table order.</param>
/// <param name="Runs">One run per seed, each with every row.</param>
/// <param name="Machine">The machine, in words (CPU model first).</param>
/// <param name="Quick">True for the CI variant.</param>
/// <param name="Settings">The run's settings, as text.</param>
public sealed record BenchmarkResult(
    IReadOnlyList<string> Tasks,
    IReadOnlyList<SeedRun> Runs,
    string Machine,
    bool Quick,
    IReadOnlyDictionary<string, string> Settings)
{
    /// <summary>The rows as means over seeds (per task), in table order; a setting chosen differently per seed reads "seed: value; …".</summary>
    public IReadOnlyList<MethodResult> Methods =>
        Runs.Count == 0 ? [] : Runs[0].Methods.Select(m => Mean(m.Method)).ToList();

    MethodResult Mean(string method)
    {
        var rows = Runs.Select(r => r.Find(method) ?? throw new InvalidOperationException($"seed {r.Seed} has no '{method}' row")).ToList();
        if (rows.Count == 1) return rows[0];
        var acc = Enumerable.Range(0, rows[0].Accuracy.Count).Select(i => rows.Average(r => r.Accuracy[i])).ToList();
        var config = rows[0].Config.Keys.ToDictionary(k => k, k =>
        {
            var values = rows.Select(r => r.Config.GetValueOrDefault(k, "")).ToList();
            return values.Distinct().Count() == 1 ? values[0] : string.Join("; ", Runs.Select((r, i) => $"{r.Seed}: {values[i]}"));
        });
        var notes = string.Join(" | ", Runs.Select((r, i) => rows[i].Notes.Length == 0 ? "" : $"seed {r.Seed}: {rows[i].Notes}").Where(n => n.Length > 0));
        return new MethodResult(method, acc, rows.Average(r => r.Seconds), config, notes);
    }

    /// <summary>Sample standard deviation over seeds of a row's accuracy per task, then of its average (0 with one seed).</summary>
    public (IReadOnlyList<double> PerTask, double Average) Spread(string method)
    {
        var rows = Runs.Select(r => r.Find(method)!).ToList();
        var perTask = Enumerable.Range(0, Tasks.Count).Select(i => SeedStatistics.MeanStd(rows.Select(r => r.Accuracy[i]).ToList()).Std).ToList();
        return (perTask, SeedStatistics.MeanStd(rows.Select(r => r.Average).ToList()).Std);
    }

    /// <summary>Every seed's stages, in order.</summary>
    public IReadOnlyList<(string Stage, double Seconds)> Stages => Runs.SelectMany(r => r.Stages).ToList();

    /// <summary>The zoo folders (one per seed).</summary>
    public string ZooFolder => string.Join(", ", Runs.Select(r => r.ZooFolder).Distinct());

    /// <summary>True when no seed's zoo was trained in this run.</summary>
    public bool ZooFromCache => Runs.All(r => r.ZooFromCache);

    /// <summary>Sum of every seed's stage times: the wall time when the seeds ran one after another, more than it when they ran side by side.</summary>
    public double TotalSeconds => Runs.Sum(r => r.Stages.Sum(s => s.Seconds));

    /// <summary>A row (mean over seeds) by name, or null.</summary>
    public MethodResult? Find(string method) =>
        Runs.Count > 0 && Runs[0].Find(method) is not null ? Mean(method) : null;
}
