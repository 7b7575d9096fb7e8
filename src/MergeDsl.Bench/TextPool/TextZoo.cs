using System.Diagnostics;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Bench.TaskPool;
using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// The text pool's model zoo on disk: a pretrained tiny Llama and one fine-tuned expert per held-in domain,
/// each a Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that
/// <c>mergedsl score</c>, <c>generate</c> and the merge commands read as they are.
/// </summary>
/// <param name="Settings">What the zoo was built with.</param>
/// <param name="Folder">The cache folder (<c>&lt;data&gt;/textzoo/&lt;hash&gt;</c>).</param>
/// <param name="FromCache">True when no training ran in this call.</param>
/// <param name="TrainSeconds">Seconds per training stage, measured when the zoo was built.</param>
public sealed record TextZoo(TextZooSettings Settings, string Folder, bool FromCache, IReadOnlyDictionary<string, double> TrainSeconds)
{
    /// <summary>The pretrained model's folder.</summary>
    public string BaseFolder => Path.Combine(Folder, "pretrained");

    /// <summary>Each expert's folder, in <see cref="TextZooSettings.Experts"/> order.</summary>
    public IReadOnlyList<string> ExpertFolders => Settings.Experts.Select(ExpertFolder).ToList();

    /// <summary>The folder of the expert of <paramref name="domain"/>.</summary>
    public string ExpertFolder(string domain) => Path.Combine(Folder, "experts", domain);
}

/// <summary>Trains the text zoo or finds it in its cache folder.</summary>
public static class TextZooBuilder
{
    /// <summary>The zoo marker: written last, so a zoo without it is incomplete and is trained again.</summary>
    public const string Marker = "zoo.json";

    /// <summary>
    /// Returns the zoo for <paramref name="s"/> over <paramref name="data"/> (every held-in domain's splits, by
    /// name), training and saving it under <paramref name="zooRoot"/> when no complete copy exists.
    /// </summary>
    public static TextZoo Build(TextZooSettings s, IReadOnlyDictionary<string, TextSplits> data, string zooRoot, Action<string>? log = null)
    {
        s.Validate();
        var experts = s.Experts.Select(e => data[e]).ToList();
        var folder = Path.Combine(zooRoot, s.Hash(experts.Select(d => d.Info)));
        var done = Path.Combine(folder, Marker);
        // Two runs sharing the zoo (the pool and the scale study, or parallel tests) must not train it twice at once.
        using var buildLock = BuildLock.Acquire(folder + ".lock", log);
        if (File.Exists(done))
        {
            log?.Invoke($"text zoo: reusing {folder}");
            var info = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(done))!;
            var times = info["train_seconds"].Deserialize<Dictionary<string, double>>()!;
            return new TextZoo(s, folder, true, times);
        }
        var cfg = s.ModelConfig();
        var seconds = new Dictionary<string, double>();
        var sw = Stopwatch.StartNew();
        var files = DecoderModelFolder.ByteTokenizerFiles();
        using (var pre = DecoderModelFolder.Random(cfg, s.Seed, label: "pretrained"))
        {
            log?.Invoke($"text zoo: {pre.ParameterCount:N0} parameters; pretraining {s.PretrainSteps} steps on {string.Join("+", s.Experts)}");
            Train(pre, experts.Select(d => d.Train).ToList(), s.PretrainSteps, s.PretrainBatch, s.PretrainLr, s.Context, s.Seed, "pretrain", log);
            DecoderModelFolder.Save(Path.Combine(folder, "pretrained"), pre, files, overwrite: true);
        }
        seconds["pretrain"] = sw.Elapsed.TotalSeconds;
        for (int i = 0; i < experts.Count; i++)
        {
            sw.Restart();
            var name = s.Experts[i];
            using var model = DecoderModelFolder.Load(Path.Combine(folder, "pretrained"));
            Train(model, [experts[i].Train], s.FineTuneSteps, s.FineTuneBatch, s.FineTuneLr, s.Context, s.Seed + 100 + i, $"expert {name}", log);
            DecoderModelFolder.Save(Path.Combine(folder, "experts", name), model, files, overwrite: true);
            seconds[$"finetune {name}"] = sw.Elapsed.TotalSeconds;
        }
        File.WriteAllText(done, new System.Text.Json.Nodes.JsonObject
        {
            ["settings"] = JsonSerializer.SerializeToNode(s),
            ["data"] = JsonSerializer.SerializeToNode(experts.Select(d => d.Info)),
            ["train_seconds"] = JsonSerializer.SerializeToNode(seconds),
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return new TextZoo(s, folder, false, seconds);
    }

    /// <summary>
    /// Next-byte cross-entropy training of every parameter: AdamW (weight decay 0.01), warm-up then cosine,
    /// gradient norm clipped at 1; each step's windows come from the texts in turn (a uniform mix).
    /// </summary>
    static void Train(DecoderModel model, IReadOnlyList<byte[]> texts, int steps, int batch, double lr, int context, int seed,
        string what, Action<string>? log)
    {
        if (steps == 0) return;
        var rng = new Random(seed);
        using var opt = optim.AdamW(model.parameters(), lr, weight_decay: 0.01);
        model.train();
        float first = float.NaN, last = 0;
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            TrainingSchedule.SetLr(opt, TrainingSchedule.CosineLr(lr, step, steps, Math.Max(1, steps / 10)));
            // Each window's text in turn from a rotating start, so every step sees the domains equally.
            var parts = Enumerable.Range(0, batch)
                .GroupBy(b => texts[(b + step) % texts.Count])
                .Select(g => ByteWindows.Random(g.Key, context, g.Count(), rng)).ToList();
            var inputs = cat(parts.Select(p => p.Inputs).ToList(), 0);
            var targets = cat(parts.Select(p => p.Targets).ToList(), 0);
            var logits = model.Forward(inputs);
            var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.reshape(-1));
            opt.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), 1.0);
            opt.step();
            last = loss.item<float>();
            if (step == 0) first = last;
            if (log is not null && (step + 1) % Math.Max(1, steps / 4) == 0)
                log($"{what} step {step + 1}/{steps}: loss {last / Math.Log(2):F3} bits/byte");
        }
        log?.Invoke($"{what}: {steps} steps, training loss {first / Math.Log(2):F3} -> {last / Math.Log(2):F3} bits/byte");
    }
}
