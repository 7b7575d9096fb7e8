namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// The one rule by which the benchmarks pick a hyper-parameter setting: every setting of a grid is scored on
/// validation data and the best score wins; test data never enters the choice.
/// </summary>
public static class ValidationChoice
{
    /// <summary>What a choice tried and kept.</summary>
    /// <param name="Best">The setting with the best validation score (the first one in grid order on a tie).</param>
    /// <param name="Scores">Every setting's validation score, in grid order.</param>
    public sealed record Choice<TSetting>(TSetting Best, IReadOnlyList<(TSetting Setting, double Score)> Scores);

    /// <summary>
    /// Scores every setting of <paramref name="grid"/> with <paramref name="score"/> and returns the highest
    /// (<paramref name="higherIsBetter"/>, e.g. accuracy) or the lowest (e.g. bits per byte). A grid of one setting
    /// is returned without scoring it: there is nothing to choose.
    /// </summary>
    /// <exception cref="ArgumentException">The grid is empty, or a score is not a finite number.</exception>
    public static Choice<TSetting> Best<TSetting>(IReadOnlyList<TSetting> grid, Func<TSetting, double> score, bool higherIsBetter)
    {
        if (grid.Count == 0) throw new ArgumentException("validation choice: an empty hyper-parameter grid");
        if (grid.Count == 1) return new Choice<TSetting>(grid[0], []);
        var scores = new List<(TSetting, double)>();
        int best = -1;
        double bestScore = double.NaN;
        foreach (var s in grid)
        {
            double v = score(s);
            if (!double.IsFinite(v)) throw new ArgumentException($"validation choice: setting {s} scored {v}");
            scores.Add((s, v));
            if (best < 0 || (higherIsBetter ? v > bestScore : v < bestScore)) { best = scores.Count - 1; bestScore = v; }
        }
        return new Choice<TSetting>(grid[best], scores);
    }
}

/// <summary>Summaries over seeds, as the benchmarks report them.</summary>
public static class SeedStatistics
{
    /// <summary>Mean and sample standard deviation (n − 1; 0 for a single value) of <paramref name="xs"/>.</summary>
    public static (double Mean, double Std) MeanStd(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return (double.NaN, double.NaN);
        double mean = xs.Average();
        double std = xs.Count < 2 ? 0 : Math.Sqrt(xs.Sum(x => (x - mean) * (x - mean)) / (xs.Count - 1));
        return (mean, std);
    }
}
