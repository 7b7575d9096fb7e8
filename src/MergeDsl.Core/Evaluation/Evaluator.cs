using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Evaluation;

/// <summary>Accuracy and mean cross-entropy of one task.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Accuracy">Fraction of correct top-1 predictions.</param>
/// <param name="Loss">Mean cross-entropy (natural log).</param>
/// <param name="Count">Examples evaluated.</param>
public sealed record TaskScore(string Task, double Accuracy, double Loss, long Count);

/// <summary>A full evaluation: per-task scores, their unweighted average, and model information.</summary>
/// <param name="Tasks">One score per task, in the order evaluated.</param>
/// <param name="ModelInfo">What is known about the evaluated model (kind, sizes, settings), as JSON values.</param>
public sealed record EvalReport(IReadOnlyList<TaskScore> Tasks, IReadOnlyDictionary<string, JsonNode?> ModelInfo)
{
    /// <summary>Mean accuracy over tasks (each task counts once, as in FusionBench).</summary>
    public double AverageAccuracy => Tasks.Count == 0 ? double.NaN : Tasks.Average(t => t.Accuracy);
    /// <summary>Mean loss over tasks.</summary>
    public double AverageLoss => Tasks.Count == 0 ? double.NaN : Tasks.Average(t => t.Loss);

    /// <summary>
    /// FusionBench's report shape: <c>{"&lt;task&gt;": {"accuracy": a, "loss": l}, …, "average": {"accuracy": …,
    /// "loss": …}, "model_info": {…}}</c>.
    /// </summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject();
        foreach (var t in Tasks) o[t.Task] = new JsonObject { ["accuracy"] = t.Accuracy, ["loss"] = t.Loss };
        o["average"] = new JsonObject { ["accuracy"] = AverageAccuracy, ["loss"] = AverageLoss };
        var info = new JsonObject();
        foreach (var (k, v) in ModelInfo) info[k] = v?.DeepClone();
        o["model_info"] = info;
        return o;
    }

    /// <summary>Indented JSON text.</summary>
    public string ToJsonText() => ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>Evaluates a model with per-task heads on labelled data, batch by batch without gradients.</summary>
public static class Evaluator
{
    /// <summary>Scores one task.</summary>
    public static TaskScore Score(nn.Module<Tensor, Tensor> model, ClassificationHead head, TaskData data, int batchSize, Device device,
        ImagePreprocess? preprocess = null)
    {
        if (data.Labels is null) throw new ArgumentException($"task {data.Task}: no labels to evaluate against");
        head.to(device);
        long correct = 0;
        double lossSum = 0;
        long classes = head.NumClasses;
        ClipInference.ForEachBatch(model, data.Images, batchSize, device, preprocess, (start, emb) =>
        {
            var logits = head.forward(emb);
            var y = data.Labels.narrow(0, start, emb.shape[0]).to(device);
            if (y.max().item<long>() >= classes || y.min().item<long>() < 0)
                throw new ArgumentException($"task {data.Task}: a label is outside 0..{classes - 1} (the head has {classes} classes)");
            correct += logits.argmax(-1).eq(y).sum().item<long>();
            lossSum += nn.functional.cross_entropy(logits, y, reduction: nn.Reduction.Sum).item<float>();
        });
        long n = data.Count;
        return new TaskScore(data.Task, n == 0 ? double.NaN : (double)correct / n, n == 0 ? double.NaN : lossSum / n, n);
    }

    /// <summary>Scores every task that has both data and a head; throws naming tasks with data but no head.</summary>
    public static EvalReport Evaluate(nn.Module<Tensor, Tensor> model, IReadOnlyDictionary<string, ClassificationHead> heads,
        IReadOnlyList<TaskData> data, int batchSize, Device device, ImagePreprocess? preprocess = null,
        IReadOnlyDictionary<string, JsonNode?>? modelInfo = null, Action<TaskScore>? onTask = null)
    {
        var headless = data.Where(d => !heads.ContainsKey(d.Task)).Select(d => d.Task).ToList();
        if (headless.Count > 0)
            throw new ArgumentException($"no head for task(s) {string.Join(", ", headless)} (heads: {string.Join(", ", heads.Keys)})");
        model.to(device);
        var scores = new List<TaskScore>();
        foreach (var d in data)
        {
            var s = Score(model, heads[d.Task], d, batchSize, device, preprocess);
            scores.Add(s);
            onTask?.Invoke(s);
        }
        return new EvalReport(scores, modelInfo ?? new Dictionary<string, JsonNode?>());
    }
}
