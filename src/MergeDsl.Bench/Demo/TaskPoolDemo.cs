using System.Globalization;
using MergeDsl.Bench.TaskPool;

namespace MergeDsl.Bench.Demo;

/// <summary>
/// What <c>mergedsl demo</c> runs: the task-pool benchmark restricted to the rows that show what merging is for
/// (Pretrained, each task's Individual expert, Simple Average, Task Arithmetic, TIES-Merging, WEMoE), with the
/// benchmark's own grids and validation choice, and the one-line reading of its numbers.
/// </summary>
public static class TaskPoolDemo
{
    /// <summary>The demo's rows, in table order (names of <see cref="TaskPoolBenchmark.MethodOrder"/>).</summary>
    public static readonly IReadOnlyList<string> Methods =
        ["Pretrained", "Individual", "Simple Average", "Task Arithmetic", "TIES-Merging", "WEMoE"];

    /// <summary>
    /// The demo's changes to the benchmark's settings: only <see cref="Methods"/> run. No hyper-parameter is the
    /// demo's own: TA's λ, TIES' λ and density and WEMoE's lr and objective are chosen, as in the task pool, on each
    /// task's validation images from the task pool's grids (full or <c>--quick</c>); the zoo is the task pool's.
    /// </summary>
    public static BenchmarkOverrides Overrides() => new() { Methods = new HashSet<string>(Methods) };

    /// <summary>
    /// One sentence saying what the run shows, computed from its average accuracies: how much of the gap that Task
    /// Arithmetic leaves to the individual experts WEMoE recovers (or that there was no gap, or that WEMoE lost).
    /// </summary>
    /// <exception cref="ArgumentException">The result lacks one of the rows the sentence reads.</exception>
    public static string Headline(BenchmarkResult r)
    {
        double Avg(string m) => (r.Find(m) ?? throw new ArgumentException($"the result has no '{m}' row")).Average;
        double ta = Avg("Task Arithmetic"), ind = Avg("Individual"), we = Avg("WEMoE");
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
        var numbers = $"average accuracy over {r.Tasks.Count} tasks: Task Arithmetic {F(ta)}, WEMoE {F(we)}, Individual {F(ind)}";
        double gap = ind - ta;
        // Below half a point the gap is within the evaluation's noise: a percentage of it would mean nothing.
        if (gap < 0.5)
            return $"Task Arithmetic leaves no gap to the individual experts for WEMoE to recover ({numbers}).";
        double recovered = (we - ta) / gap;
        if (recovered < 0)
            return $"WEMoE ends {F(ta - we)} points below Task Arithmetic: its routers did not help on this run ({numbers}).";
        return $"WEMoE recovers {(recovered * 100).ToString("F0", CultureInfo.InvariantCulture)}% of the gap Task Arithmetic " +
            $"leaves to the individual experts, with one model for all tasks ({numbers}).";
    }
}
