using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// Where a trained router sends each task's inputs: the mean routing weight of every expert over a task's
/// images, per upscaled layer. With one expert per task a good router puts the largest weight on the diagonal.
/// </summary>
/// <param name="Tasks">Task (row) names; experts (columns) are in the same order.</param>
/// <param name="Layers">Per routed module (model order): [task][expert] mean routing weight.</param>
public sealed record RouteSummary(IReadOnlyList<string> Tasks, IReadOnlyList<double[][]> Layers)
{
    /// <summary>Runs the first <paramref name="images"/> images of each task through <paramref name="moe"/> and averages the routes.</summary>
    public static RouteSummary Measure(MoeModel moe, IReadOnlyList<TaskData> data, ImagePreprocess preprocess, int images)
    {
        var modules = moe.RoutedModules.ToList();
        var layers = modules.Select(_ => new double[data.Count][]).ToList();
        using var _ = no_grad();
        for (int t = 0; t < data.Count; t++)
        {
            using var scope = NewDisposeScope();
            var n = Math.Min(images, data[t].Count);
            moe.Model.forward(preprocess.Apply(data[t].Images.narrow(0, 0, n), CPU));
            for (int l = 0; l < modules.Count; l++)
                layers[l][t] = modules[l].LastRoutes!.to_type(ScalarType.Float64).mean([0]).data<double>().ToArray();
        }
        return new RouteSummary(data.Select(d => d.Task).ToList(), layers);
    }

    /// <summary>Per task, the routing weight its own expert gets in the last layer, and whether it is that row's largest.</summary>
    public string LastLayerDiagonal()
    {
        var last = Layers[^1];
        return string.Join(", ", Tasks.Select((t, i) =>
            $"{t} {last[i][i]:F2}{(last[i].Length > i && last[i].Max() == last[i][i] ? "" : $" (max {last[i].Max():F2} on {Tasks[Array.IndexOf(last[i], last[i].Max())]})")}"));
    }
}
