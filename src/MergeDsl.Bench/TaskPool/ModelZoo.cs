using System.Diagnostics;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// The pretrained model, one fine-tuned expert per task and one frozen head per task, with the wall time and
/// individual accuracies measured when they were built.
/// </summary>
public sealed class ModelZoo : IDisposable
{
    /// <summary>Settings the zoo was built with.</summary>
    public required ZooSettings Settings { get; init; }
    /// <summary>Folder the zoo is cached in.</summary>
    public required string Folder { get; init; }
    /// <summary>Pretrained parameters (HF names).</summary>
    public required Dictionary<string, Tensor> Pretrained { get; init; }
    /// <summary>Fine-tuned parameters per task, in task order.</summary>
    public required IReadOnlyList<Dictionary<string, Tensor>> Experts { get; init; }
    /// <summary>Frozen head per task (<c>weight</c>, <c>bias</c>), in task order.</summary>
    public required IReadOnlyList<Dictionary<string, Tensor>> Heads { get; init; }
    /// <summary>True when the zoo was read from the cache rather than trained in this run.</summary>
    public bool FromCache { get; init; }
    /// <summary>Seconds spent per stage when the zoo was trained (pretrain, heads, finetune).</summary>
    public required IReadOnlyDictionary<string, double> TrainSeconds { get; init; }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in Pretrained.Values) t.Dispose();
        foreach (var d in Experts.Concat(Heads)) foreach (var t in d.Values) t.Dispose();
    }
}

/// <summary>Trains the model zoo or reads it from its cache folder.</summary>
public static class ZooBuilder
{
    /// <summary>
    /// Returns the zoo for these settings, training it (and caching it under <paramref name="zooRoot"/>/&lt;hash&gt;)
    /// when no complete cached copy exists. <paramref name="tasks"/> must be in task-pool order.
    /// </summary>
    public static ModelZoo Build(ZooSettings s, IReadOnlyList<TaskTensors> tasks, TaskTensors pretrainDigits,
        TaskTensors pretrainFashion, string zooRoot, Action<string>? log = null)
    {
        var folder = Path.Combine(zooRoot, s.Hash(tasks.Select(t => t.Task)));
        var done = Path.Combine(folder, "zoo.json");
        if (File.Exists(done))
        {
            log?.Invoke($"model zoo: reusing {folder}");
            var info = JsonSerializer.Deserialize<Dictionary<string, double>>(File.ReadAllText(done))!;
            return new ModelZoo
            {
                Settings = s, Folder = folder, FromCache = true, TrainSeconds = info,
                Pretrained = TensorFile.Read(Path.Combine(folder, "pretrained", "model.safetensors")),
                Experts = tasks.Select(t => TensorFile.Read(Path.Combine(folder, "experts", t.Task.Name, "model.safetensors"))).ToList(),
                Heads = tasks.Select(t => TensorFile.Read(Path.Combine(folder, "pretrained", "heads", t.Task.Name + ".safetensors"))).ToList(),
            };
        }
        torch.manual_seed(s.Seed);
        var times = new Dictionary<string, double>();
        var sw = Stopwatch.StartNew();
        var pre = Pretrain(s, pretrainDigits, pretrainFashion, log);
        times["pretrain"] = sw.Elapsed.TotalSeconds;
        sw.Restart();
        var heads = tasks.Select((t, i) => FitHead(s, pre, t, s.Seed + 100 + i, log)).ToList();
        times["heads"] = sw.Elapsed.TotalSeconds;
        sw.Restart();
        var experts = tasks.Select((t, i) => FineTune(s, pre, heads[i], t, s.Seed + 200 + i, log)).ToList();
        times["finetune"] = sw.Elapsed.TotalSeconds;

        var meta = new Dictionary<string, string> { ["zoo_settings"] = JsonSerializer.Serialize(s) };
        var config = s.ModelConfigJson();
        // Every model is a CLIP model folder (config.json, model.safetensors, heads/<task>.safetensors), so
        // `mergedsl eval` and the merge commands read the zoo directly.
        void Save(string dir, Dictionary<string, Tensor> p)
        {
            TensorFile.Write(Path.Combine(dir, "model.safetensors"), p, meta);
            File.WriteAllText(Path.Combine(dir, "config.json"), config);
            for (int i = 0; i < tasks.Count; i++)
                TensorFile.Write(Path.Combine(dir, "heads", tasks[i].Task.Name + ".safetensors"), heads[i],
                    new Dictionary<string, string> { ["classes"] = JsonSerializer.Serialize(tasks[i].Task.Classes) });
        }
        Save(Path.Combine(folder, "pretrained"), pre);
        for (int i = 0; i < tasks.Count; i++) Save(Path.Combine(folder, "experts", tasks[i].Task.Name), experts[i]);
        File.WriteAllText(done, JsonSerializer.Serialize(times));
        return new ModelZoo
        {
            Settings = s, Folder = folder, FromCache = false, TrainSeconds = times,
            Pretrained = pre, Experts = experts, Heads = heads,
        };
    }

    /// <summary>A core CLIP model with CLIP's init (N(0, 0.02) weights, zero biases, unit LayerNorms) from a seeded generator.</summary>
    static ClipVisionModel NewModel(ZooSettings s, Generator gen)
    {
        var model = new ClipVisionModel(s.Model.Validate());
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith(".bias")) p.zero_();
            else if (name.Contains("layernorm") || name.Contains("layer_norm") || name.Contains("layrnorm")) p.FillWith(1.0);
            else p.copy_(normal(0.0, 0.02, p.shape, generator: gen));
        }
        return model;
    }

    /// <summary>Generic supervised pretraining on the union of raw digits (classes 0-9) and raw Fashion (10-19).</summary>
    static Dictionary<string, Tensor> Pretrain(ZooSettings s, TaskTensors digits, TaskTensors fashion, Action<string>? log)
    {
        var gen = new Generator((ulong)s.Seed);
        using var model = NewModel(s, gen);
        // A 20-class head trained with the encoder, logit scale 10.
        using var head = new ClassificationHead("pretrain", normal(0.0, 0.02, [20, s.Model.ProjectionDim], generator: gen), 10f);
        head.Weight.requires_grad = true;
        var all = model.parameters().Append(head.Weight).ToList();
        using var opt = optim.AdamW(all, s.PretrainLr, weight_decay: 0.05);
        var rng = new Random(s.Seed);
        int half = s.PretrainBatch / 2;
        model.train();
        for (int step = 0; step < s.PretrainSteps; step++)
        {
            using var scope = NewDisposeScope();
            TrainingSchedule.SetLr(opt, TrainingSchedule.CosineLr(s.PretrainLr, step, s.PretrainSteps, Math.Max(1, s.PretrainSteps / 20)));
            var (xd, yd) = digits.TrainBatch(rng, half);
            var (xf, yf) = fashion.TrainBatch(rng, s.PretrainBatch - half);
            var x = cat([xd, xf], 0);
            var y = cat([yd, yf.Plus(10L)], 0);
            var loss = nn.functional.cross_entropy(head.forward(model.forward(x)), y);
            opt.zero_grad();
            loss.backward();
            opt.step();
            if (log is not null && (step + 1) % Math.Max(1, s.PretrainSteps / 5) == 0)
                log($"pretrain step {step + 1}/{s.PretrainSteps}: loss {loss.item<float>():F3}");
        }
        return model.StateTensors();
    }

    /// <summary>
    /// A linear head fitted on the frozen pretrained encoder's embeddings of the task's training images (the
    /// role of CLIP's zero-shot text heads), then frozen for fine-tuning and merging.
    /// </summary>
    static Dictionary<string, Tensor> FitHead(ZooSettings s, Dictionary<string, Tensor> pre, TaskTensors task, int seed, Action<string>? log)
    {
        Tensor feats;
        using (var model = new ClipVisionModel(s.Model.Validate()))
        {
            model.LoadWeights(pre, "pretrained");
            feats = ClipInference.Embed(model, task.TrainImages, 1000, CPU, s.Preprocess());
        }
        int classes = task.Task.ClassCount;
        var gen = new Generator((ulong)seed);
        var w = new Parameter(normal(0.0, 0.01, [classes, s.Model.ProjectionDim], generator: gen), true);
        var opt = optim.Adam([w], 1e-2);
        var feN = nn.functional.normalize(feats, p: 2, dim: -1);
        for (int step = 0; step < s.HeadSteps; step++)
        {
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(feN.matmul(w.t()), task.TrainLabels).Plus(w.Power(2).sum().Times(1e-5));
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
        // The scale is folded into the rows; logit_scale 1 keeps the file self-describing for other readers.
        var head = new Dictionary<string, Tensor> { ["weight"] = w.detach().clone(), ["logit_scale"] = tensor(1f) };
        feats.Dispose(); feN.Dispose(); w.Dispose(); opt.Dispose();
        log?.Invoke($"head {task.Task.Name}: fitted on {task.TrainImages.shape[0]} pretrained embeddings");
        return head;
    }

    /// <summary>A stored head (<c>weight</c>, <c>logit_scale</c>) as the core's frozen head module.</summary>
    public static ClassificationHead ToHead(string task, IReadOnlyDictionary<string, Tensor> head) =>
        new(task, head["weight"], head["logit_scale"].item<float>());

    static bool IsMlp(string name) => name.Contains(".mlp.", StringComparison.Ordinal);

    static bool Trainable(FineTuneScope scope, string name) => scope switch
    {
        FineTuneScope.Mlp => IsMlp(name),
        FineTuneScope.MlpAndAttention => IsMlp(name) || name.Contains(".self_attn."),
        _ => false,
    };

    /// <summary>Fine-tunes one expert from the pretrained weights with its head frozen.</summary>
    static Dictionary<string, Tensor> FineTune(ZooSettings s, Dictionary<string, Tensor> pre, Dictionary<string, Tensor> head,
        TaskTensors task, int seed, Action<string>? log)
    {
        using var model = new ClipVisionModel(s.Model.Validate());
        model.LoadWeights(pre, "pretrained");
        foreach (var (name, p) in model.named_parameters()) p.requires_grad = Trainable(s.Scope, name);
        using var h = ToHead(task.Task.Name, head);
        using var opt = optim.Adam(model.parameters().Where(v => v.requires_grad).ToList(), s.FineTuneLr);
        var rng = new Random(seed);
        float last = 0;
        model.train();
        for (int step = 0; step < s.FineTuneSteps; step++)
        {
            using var scope = NewDisposeScope();
            TrainingSchedule.SetLr(opt, s.FineTuneLr * Math.Min(1.0, (step + 1) / 20.0));
            var (x, y) = task.TrainBatch(rng, s.FineTuneBatch);
            var loss = nn.functional.cross_entropy(h.forward(model.forward(x)), y);
            opt.zero_grad();
            loss.backward();
            opt.step();
            last = loss.item<float>();
        }
        log?.Invoke($"expert {task.Task.Name}: {s.FineTuneSteps} steps, last loss {last:F3}");
        return model.StateTensors();
    }
}
