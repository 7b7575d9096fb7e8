using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// The rows of one seed's task-pool run, over a trained (or cached) zoo: each <c>Add…</c> method runs one group of
/// the table's methods (baselines, static merges, AdaMerging, the WEMoE family, SMILE, the diagnostic rows). A row
/// with a hyper-parameter grid runs every setting on the validation images (adaptive rows adapt on the unlabelled
/// validation images and are scored there), keeps the best mean validation accuracy, runs that setting on the test
/// images and records a <see cref="MethodResult"/>. Owns the task heads and the distillation teachers.
/// </summary>
sealed class TaskPoolRows : IDisposable
{
    readonly BenchmarkOptions o;
    readonly IReadOnlyList<TaskTensors> tasks;
    readonly ModelZoo zoo;
    readonly Action<string> log;
    readonly Action<string> stage;
    readonly ClipVisionConfig cfg;
    readonly ImagePreprocess preprocess;
    readonly List<string> names;
    readonly Dictionary<string, ClassificationHead> heads;
    readonly List<TaskData> testData;
    readonly List<TaskData> validationData;
    readonly InMemorySource preSource;
    readonly List<ITensorSource> expertSources;
    readonly List<MethodResult> methods = [];
    // The experts as teachers of the distillation objective, built on first use by a method's body: outside
    // the adaptation steps' dispose scopes, which would otherwise free their weights after the first step.
    ExpertTeachers? teachers;
    // Choices other rows build on, made once on first use.
    ValidationChoice.Choice<double>? lambdaChoice;
    ValidationChoice.Choice<AdaptSetting>? weMoEChoice;

    /// <summary>One setting of an adaptive row's grid.</summary>
    sealed record AdaptSetting(double Lr, int Steps, AdaptObjective Objective)
    {
        public override string ToString() => FormattableString.Invariant($"lr={Lr}, steps={Steps}, objective={ObjectiveName(Objective)}");
    }

    static string ObjectiveName(AdaptObjective a) => a switch
    {
        AdaptObjective.Entropy => "entropy",
        AdaptObjective.EntropyDiversity => "entropy-diversity",
        AdaptObjective.Distillation => "distillation",
        _ => "supervised",
    };

    public TaskPoolRows(BenchmarkOptions options, IReadOnlyList<TaskTensors> tasks, ModelZoo zoo, Action<string> log, Action<string> stage)
    {
        o = options;
        this.tasks = tasks;
        this.zoo = zoo;
        this.log = log;
        this.stage = stage;
        cfg = o.Zoo.Model.Validate();
        preprocess = o.Zoo.Preprocess();
        names = tasks.Select(t => t.Task.Name).ToList();
        heads = names.Select((t, i) => (t, ZooBuilder.ToHead(t, zoo.Heads[i]))).ToDictionary(p => p.t, p => p.Item2);
        // Views of the task tensors (not owned: the tasks dispose them).
        testData = tasks.Select(t => new TaskData(t.Task.Name, t.TestImages, t.TestLabels)).ToList();
        validationData = tasks.Select(t => new TaskData(t.Task.Name, t.ValidationImages, t.ValidationLabels)).ToList();
        preSource = new InMemorySource("pretrained", zoo.Pretrained);
        expertSources = zoo.Experts.Select((e, i) => (ITensorSource)new InMemorySource(names[i], e)).ToList();
    }

    /// <summary>The rows recorded so far, in the order they ran.</summary>
    public IReadOnlyList<MethodResult> Methods => methods;

    int N => tasks.Count;

    static readonly Dictionary<string, string> NoConfig = [];

    static string Num(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    double Score(nn.Module<Tensor, Tensor> model, int task, IReadOnlyList<TaskData> data) =>
        100.0 * Evaluator.Score(model, heads[names[task]], data[task], 500, CPU, preprocess).Accuracy;

    double[] Eval(nn.Module<Tensor, Tensor> model, IReadOnlyList<TaskData> data) => Enumerable.Range(0, N).Select(i => Score(model, i, data)).ToArray();

    ClipVisionModel Plain(IReadOnlyDictionary<string, Tensor> weights, string label)
    {
        var m = new ClipVisionModel(cfg);
        m.LoadWeights(weights, label);
        return m;
    }

    double[] EvalWeights(IReadOnlyDictionary<string, Tensor> weights, string label, IReadOnlyList<TaskData> data)
    {
        using var m = Plain(weights, label);
        return Eval(m, data);
    }

    double[] EvalRecipe(MergeRecipe recipe, IReadOnlyList<TaskData> data)
    {
        var merged = TaskPoolRecipes.Run(recipe, preSource, expertSources, o.Zoo.Seed);
        try { return EvalWeights(merged, recipe.Name, data); }
        finally { foreach (var t in merged.Values) t.Dispose(); }
    }

    /// <summary>Task arithmetic's λ, chosen on validation images; also the starting λ of AdaMerging and the WEMoE rows.</summary>
    ValidationChoice.Choice<double> LambdaChoice() =>
        lambdaChoice ??= ValidationChoice.Best(o.TaLambdas, l => EvalRecipe(TaskPoolRecipes.TaskArithmetic(l), validationData).Average(), higherIsBetter: true);

    double Lambda => LambdaChoice().Best;

    Func<int, Tensor, Tensor>? TeacherFor(AdaptationSettings a)
    {
        if (a.Options.Objective != AdaptObjective.Distillation) return null;
        teachers ??= new ExpertTeachers(zoo.Experts.Select((e, i) => Plain(e, names[i])).ToList(), names.Select(n => heads[n]).ToList());
        return teachers.AsFunction();
    }

    AdaptationReport Guarded(AdaptationSettings s, IReadOnlyList<TaskData> data, Func<IAdaptMonitor, AdaptResult> run)
    {
        using var guard = new CollapseGuard(s, data.Select(t => TaskTensors.ToInput(t.Images.narrow(0, 0, Math.Min(s.ProbeImages, t.Images.shape[0])))).ToList(), log);
        run(guard);
        return guard.Report();
    }

    MoeModel Upscale(MoeKind kind, Func<UpscaleSpec, UpscaleSpec>? extra = null)
    {
        var spec = new UpscaleSpec
        {
            Kind = kind, Modules = ["*.mlp"], RouterDepth = 2, InitLambda = Lambda, RestLambda = Lambda,
            Seed = o.Zoo.Seed + 11, ExpertNames = names,
        };
        return Upscaler.Upscale(cfg, preSource, expertSources, extra is null ? spec : extra(spec));
    }

    /// <summary>Runs and records one row, unless the options leave it out.</summary>
    void Add(string name, Func<(double[] Accuracy, IReadOnlyDictionary<string, double> Validation)> body, Dictionary<string, string> config, Func<string>? notes = null)
    {
        if (o.Methods is not null && !o.Methods.Contains(name)) return;
        var t = Stopwatch.StartNew();
        // No dispose scope here: every method disposes what it builds, and the executor's and the core
        // loop's threads must not touch a scope this thread holds open.
        var (acc, validation) = body();
        methods.Add(new MethodResult(name, acc, t.Elapsed.TotalSeconds, config, notes?.Invoke() ?? "") { Validation = validation });
        log($"{name}: avg {acc.Average():F1}  [{string.Join(" ", acc.Select(a => a.ToString("F1")))}]  ({t.Elapsed.TotalSeconds:F1} s)");
    }

    static readonly IReadOnlyDictionary<string, double> NoValidation = new Dictionary<string, double>();

    static IReadOnlyDictionary<string, double> Scores<T>(ValidationChoice.Choice<T> c) where T : notnull =>
        c.Scores.ToDictionary(s => s.Setting.ToString()!, s => Math.Round(s.Score, 3));

    /// <summary>
    /// A row with a grid: every setting run on the validation images, the best one run on the test images; the
    /// chosen values and what validation said go into <paramref name="config"/> and the row.
    /// </summary>
    void AddChosen<T>(string name, Func<ValidationChoice.Choice<T>> choose, Func<T, IReadOnlyList<TaskData>, double[]> run,
        Dictionary<string, string> config, Func<T, IReadOnlyDictionary<string, string>> chosenConfig, Func<string>? notes = null) where T : notnull =>
        Add(name, () =>
        {
            var choice = choose();
            foreach (var (k, v) in chosenConfig(choice.Best)) config[k] = v;
            if (choice.Scores.Count > 0)
            {
                config["chosen_on"] = "mean accuracy over the tasks' validation images";
                log($"  {name}: chose {choice.Best} on validation ({string.Join("; ", choice.Scores.Select(s => $"{s.Setting}: {s.Score:F1}"))})");
            }
            return (run(choice.Best, testData), Scores(choice));
        }, config, notes);

    /// <summary>Pretrained and each task's own expert.</summary>
    public void AddBaselines()
    {
        Add("Pretrained", () => (EvalWeights(zoo.Pretrained, "pretrained", testData), NoValidation), NoConfig);
        Add("Individual", () => (Enumerable.Range(0, N).Select(i =>
        {
            using var m = Plain(zoo.Experts[i], names[i]);
            return Score(m, i, testData);
        }).ToArray(), NoValidation), NoConfig);
        stage("pretrained + individual");
    }

    /// <summary>Simple average, task arithmetic, TIES and DARE-TIES, from the method registry, their settings chosen on validation.</summary>
    public void AddStaticMerges()
    {
        Add("Simple Average", () => (EvalRecipe(TaskPoolRecipes.SimpleAverage(), testData), NoValidation), NoConfig);
        AddChosen("Task Arithmetic", LambdaChoice, (l, data) => EvalRecipe(TaskPoolRecipes.TaskArithmetic(l), data), [],
            l => new Dictionary<string, string> { ["lambda"] = Num(l) });
        var ties = (from l in o.TiesLambdas from d in o.TiesDensities select new StaticSetting(l, d)).ToList();
        AddChosen("TIES-Merging", () => ValidationChoice.Best(ties, s => EvalRecipe(TaskPoolRecipes.Ties(s.Density, s.Lambda), validationData).Average(), true),
            (s, data) => EvalRecipe(TaskPoolRecipes.Ties(s.Density, s.Lambda), data), new() { ["merge"] = "sum" },
            s => new Dictionary<string, string> { ["lambda"] = Num(s.Lambda), ["density"] = Num(s.Density) });
        var dare = (from l in o.TiesLambdas from d in o.DareDensities select new StaticSetting(l, d)).ToList();
        AddChosen("DARE-TIES", () => ValidationChoice.Best(dare, s => EvalRecipe(TaskPoolRecipes.DareTies(s.Density, s.Lambda), validationData).Average(), true),
            (s, data) => EvalRecipe(TaskPoolRecipes.DareTies(s.Density, s.Lambda), data), new() { ["merge"] = "sum" },
            s => new Dictionary<string, string> { ["lambda"] = Num(s.Lambda), ["density"] = Num(s.Density) });
        stage("static merges");
    }

    /// <summary>One setting of a static merge's grid.</summary>
    sealed record StaticSetting(double Lambda, double Density)
    {
        public override string ToString() => FormattableString.Invariant($"lambda={Lambda}, density={Density}");
    }

    AdaptationSettings With(AdaptationSettings s, AdaptSetting a) =>
        s with { Options = s.Options with { LearningRate = a.Lr, Steps = a.Steps, Objective = a.Objective } };

    static Dictionary<string, string> Chosen(AdaptSetting a) => new()
    {
        ["lr"] = Num(a.Lr), ["steps"] = $"{a.Steps}", ["objective"] = ObjectiveName(a.Objective),
    };

    /// <summary>Task-wise and layer-wise AdaMerging under the collapse guard, lr / steps / objective chosen on validation.</summary>
    public void AddAdaMerging()
    {
        var grid = (from lr in o.AdaMergingLrs from st in o.AdaMergingSteps from ob in o.AdaMergingObjectives select new AdaptSetting(lr, st, ob)).ToList();
        foreach (var layerWise in new[] { false, true })
        {
            var template = layerWise ? o.AdaMergingLayerWise : o.AdaMergingTaskWise;
            AdaptationReport? rep = null;
            double[] Run(AdaptSetting a, IReadOnlyList<TaskData> data)
            {
                var s = With(template, a);
                AdaMergingResult? r = null;
                rep = Guarded(s, data, guard =>
                {
                    r = AdaMerging.Run(cfg, preSource, expertSources, heads, data, preprocess, s.Options,
                        new AdaMergingOptions(layerWise ? AdaMergingGranularity.LayerWise : AdaMergingGranularity.TaskWise, Lambda, Clamp: true),
                        monitor: guard, teacher: TeacherFor(s));
                    return r.Adapt;
                });
                using var model = r!.Model;
                r.Lambdas.Dispose();
                return Eval(model, data);
            }
            var config = TaskPoolBenchmark.AdaptConfig(template);
            config["data"] = "adapted on each task's unlabelled test images (grid: on the validation images)";
            AddChosen(layerWise ? "AdaMerging (layer-wise)" : "AdaMerging (task-wise)",
                () => ValidationChoice.Best(grid, a => Run(a, validationData).Average(), true), Run, config,
                a => new Dictionary<string, string>(Chosen(a)) { ["init_lambda"] = Num(Lambda) },
                () => TaskPoolBenchmark.Describe(rep!));
            stage(layerWise ? "adamerging layer-wise" : "adamerging task-wise");
        }
    }

    /// <summary>
    /// Builds a WEMoE-family model, trains its routers on <paramref name="data"/> (under the collapse guard when the
    /// objective is label-free) and scores it on <paramref name="scoreOn"/>.
    /// </summary>
    (double[] Accuracy, AdaptationReport? Report, RouteSummary? Routes) RunWeMoE(Func<MoeModel> build, AdaptationSettings s,
        IReadOnlyList<TaskData> data, IReadOnlyList<TaskData> scoreOn, bool summarise)
    {
        var moe = build();
        using var model = moe.Model;
        var teacher = TeacherFor(s);
        AdaptationReport? rep = null;
        if (s.Options.Objective != AdaptObjective.Supervised)
            rep = Guarded(s, data, guard => RouterAdaptation.Run(moe, heads, data, preprocess, s.Options, monitor: guard, teacher: teacher));
        else RouterAdaptation.Run(moe, heads, data, preprocess, s.Options, teacher: teacher);
        var routes = summarise ? RouteSummary.Measure(moe, scoreOn, preprocess, o.WeMoE.ProbeImages) : null;
        return (Eval(model, scoreOn), rep, routes);
    }

    /// <summary>WEMoE's lr and label-free objective, chosen on validation; E-WEMoE and the supervised bound reuse them.</summary>
    ValidationChoice.Choice<AdaptSetting> WeMoEChoice()
    {
        if (weMoEChoice is not null) return weMoEChoice;
        var grid = (from lr in o.WeMoELrs from ob in o.WeMoEObjectives select new AdaptSetting(lr, o.WeMoE.Options.Steps, ob)).ToList();
        return weMoEChoice = ValidationChoice.Best(grid,
            a => RunWeMoE(() => Upscale(MoeKind.WeMoE), With(o.WeMoE, a), validationData, validationData, false).Accuracy.Average(), true);
    }

    /// <summary>One adaptive WEMoE-family row: choose on validation, adapt on <paramref name="data"/>, record routes, evaluate on test.</summary>
    void AddWeMoE(string name, string stageName, Func<MoeModel> build, Func<ValidationChoice.Choice<AdaptSetting>> choose,
        AdaptationSettings template, IReadOnlyList<TaskData> data, Dictionary<string, string> config)
    {
        AdaptationReport? rep = null;
        RouteSummary? routes = null;
        int steps = 0;
        AddChosen(name, choose, (a, _) =>
        {
            var s = With(template, a);
            steps = s.Options.Steps;
            var r = RunWeMoE(build, s, data, testData, true);
            rep = r.Report;
            routes = r.Routes!;
            log($"  last-layer route of each task's own expert: {routes.LastLayerDiagonal()}");
            config["mean_routes_per_layer"] = JsonSerializer.Serialize(routes.Layers.Select(l => l.Select(v => v.Select(x => Math.Round(x, 3)))));
            return r.Accuracy;
        }, config, a => new Dictionary<string, string>(Chosen(a)) { ["init_lambda"] = Num(Lambda) },
        () => (rep is not null ? TaskPoolBenchmark.Describe(rep) : $"{steps} steps") + $"; last-layer route of each task's own expert: {routes!.LastLayerDiagonal()}");
        stage(stageName);
    }

    Dictionary<string, string> WeMoEConfig(AdaptationSettings s, string data)
    {
        var config = TaskPoolBenchmark.AdaptConfig(s);
        config.Remove("lr");
        config.Remove("objective");
        config["router_depth"] = "2";
        config["data"] = data;
        return config;
    }

    const string TestTime = "adapted on each task's unlabelled test images (grid: on the validation images)";

    /// <summary>WEMoE and E-WEMoE with a label-free objective (the paper's entropy or entropy-diversity, chosen on validation).</summary>
    public void AddWeMoEFamily()
    {
        AddWeMoE("WEMoE", "wemoe", () => Upscale(MoeKind.WeMoE), WeMoEChoice, o.WeMoE, testData, WeMoEConfig(o.WeMoE, TestTime));
        var sparseConfig = WeMoEConfig(o.WeMoE, TestTime + "; lr and objective: WEMoE's choice");
        sparseConfig["task_vector_density"] = $"{o.EWeMoEDensity}";
        sparseConfig["shared_router"] = "true";
        AddWeMoE("E-WEMoE", "e-wemoe", () => Upscale(MoeKind.EWeMoE, sp => sp with { KeepFraction = o.EWeMoEDensity, SharedRouter = true }),
            () => new ValidationChoice.Choice<AdaptSetting>(WeMoEChoice().Best, []), o.WeMoE, testData, sparseConfig);
    }

    /// <summary>SMILE: training-free low-rank experts (FusionBench's settings, not tuned).</summary>
    public void AddSmile()
    {
        Add("SMILE", () =>
        {
            var moe = Upscale(MoeKind.Smile, sp => sp with { Rank = o.SmileRank, GateRank = o.SmileGateRank, Routing = RouterSelection.TopKOf(o.SmileTopK) });
            using var model = moe.Model;
            return (Eval(model, testData), NoValidation);
        }, new() { ["rank"] = $"{o.SmileRank}", ["gate_rank"] = $"{o.SmileGateRank}", ["top_k"] = $"{o.SmileTopK}" });
        stage("smile");
    }

    /// <summary>Our rows beside the papers': WEMoE distilled from the experts, the supervised-router bound, oracle routing.</summary>
    public void AddDiagnostics()
    {
        // WEMoE with its routers distilled from the experts (ours, not the paper's): for each task's unlabelled
        // images, the KL divergence from that task's expert's predictions replaces the entropy. No labels, but it
        // reads two things the paper's objective does not: which task each batch comes from, and the experts' predictions.
        var distillGrid = o.DistillationLrs.Select(lr => new AdaptSetting(lr, o.DistillationSteps, AdaptObjective.Distillation)).ToList();
        AddWeMoE("WEMoE (expert distillation)", "wemoe expert distillation", () => Upscale(MoeKind.WeMoE),
            () => ValidationChoice.Best(distillGrid, a => RunWeMoE(() => Upscale(MoeKind.WeMoE), With(o.WeMoE, a), validationData, validationData, false).Accuracy.Average(), true),
            o.WeMoE, testData, WeMoEConfig(o.WeMoE, TestTime + "; reads each batch's task and that task's expert's predictions"));

        // A diagnostic bound, not a merging method: the same WEMoE with its routers trained on the tasks'
        // labelled training images (cross-entropy), with WEMoE's lr and steps. Between label-free WEMoE and oracle
        // routing, it tells how much of the gap is the label-free objective and how much the router itself.
        var train = tasks.Select(t => new TaskData(t.Task.Name, t.TrainImages, t.TrainLabels)).ToList();
        AddWeMoE("WEMoE (supervised routers)", "wemoe supervised routers", () => Upscale(MoeKind.WeMoE),
            () => new ValidationChoice.Choice<AdaptSetting>(WeMoEChoice().Best with { Objective = AdaptObjective.Supervised }, []),
            o.WeMoE, train, WeMoEConfig(o.WeMoE, "each task's labelled training images (not the test images); lr and steps: WEMoE's choice"));

        // Oracle routing: an unadapted WEMoE (non-MLP parameters TA(lambda)) whose routing is forced to each
        // task's own expert for that task's inputs: what a perfect router could reach.
        Add("Oracle routing", () =>
        {
            var moe = Upscale(MoeKind.WeMoE);
            using var model = moe.Model;
            try
            {
                return (Enumerable.Range(0, N).Select(i =>
                {
                    using var route = nn.functional.one_hot(tensor(new long[] { i }), N).to_type(ScalarType.Float32);
                    moe.ForceRoutes(route);
                    return Score(model, i, testData);
                }).ToArray(), NoValidation);
            }
            finally { moe.ForceRoutes(null); }
        }, new() { ["routing"] = "each task's inputs to its own expert MLPs (MoeModel.ForceRoutes); non-MLP parameters TA(lambda), lambda chosen for TA on validation" });
        stage("oracle routing");
    }

    public void Dispose()
    {
        teachers?.Dispose();
        foreach (var h in heads.Values) h.Dispose();
    }
}
