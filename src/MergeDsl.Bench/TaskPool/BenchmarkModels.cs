namespace MergeDsl.Bench.TaskPool;

/// <summary>One row of the benchmark table.</summary>
/// <param name="Method">Display name (e.g. "Task Arithmetic").</param>
/// <param name="Accuracy">Top-1 accuracy in percent per task, in task order.</param>
/// <param name="Seconds">Wall time of building/adapting and evaluating the method.</param>
/// <param name="Config">Hyper-parameters, as text.</param>
/// <param name="Notes">What happened (e.g. adaptation steps, collapse guard).</param>
public sealed record MethodResult(string Method, IReadOnlyList<double> Accuracy, double Seconds,
    IReadOnlyDictionary<string, string> Config, string Notes = "")
{
    /// <summary>Mean accuracy over the tasks.</summary>
    public double Average => Accuracy.Count == 0 ? double.NaN : Accuracy.Average();
}

/// <summary>Everything a benchmark run measured.</summary>
public sealed record BenchmarkResult(
    IReadOnlyList<string> Tasks,
    IReadOnlyList<MethodResult> Methods,
    IReadOnlyList<(string Stage, double Seconds)> Stages,
    string Machine,
    bool Quick,
    string ZooFolder,
    bool ZooFromCache,
    IReadOnlyDictionary<string, string> Settings)
{
    /// <summary>Total wall time of all stages.</summary>
    public double TotalSeconds => Stages.Sum(s => s.Seconds);

    /// <summary>A method's row by name, or null.</summary>
    public MethodResult? Find(string method) => Methods.FirstOrDefault(m => m.Method == method);
}
