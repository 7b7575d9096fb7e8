using System.Diagnostics;

namespace MergeDsl.Bench.TaskPool;

/// <summary>Wall time per stage of a benchmark run: each <see cref="Stage"/> call closes the stage that ran since the last.</summary>
public sealed class StageClock(Action<string> log)
{
    readonly List<(string Stage, double Seconds)> stages = [];
    readonly Stopwatch sw = Stopwatch.StartNew();

    /// <summary>Records the time since the previous stage under <paramref name="name"/> and logs it.</summary>
    public void Stage(string name)
    {
        stages.Add((name, sw.Elapsed.TotalSeconds));
        log($"[{name}] {sw.Elapsed.TotalSeconds:F1} s");
        sw.Restart();
    }

    /// <summary>The stages closed so far, in order.</summary>
    public IReadOnlyList<(string Stage, double Seconds)> Stages => stages;
}
