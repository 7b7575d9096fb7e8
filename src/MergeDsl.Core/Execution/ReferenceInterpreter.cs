using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Ir;
using Ir = MergeDsl.Core.Ir;
using MergeDsl.Core.Ops;
using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// A deliberately naive interpreter: it walks the recipe expression of every parameter recursively,
/// loads an input every time the expression mentions it, shares nothing and streams nothing; global
/// top-k sorts the concatenation of every member tensor. It exists to cross-check the compiler and
/// executor in property tests (same tensors, far more work). It validates nothing the compiler does.
/// </summary>
public static class ReferenceInterpreter
{
    /// <summary>Evaluates the recipe on every tensor of the output: the reference model's (base, else the first expert), or
    /// with <see cref="MergeRecipe.OutputLayers"/> its layer-0 tensors repeated per output layer (<see cref="Compiler.OutputTensors"/>);
    /// inside <see cref="ShiftLayers"/> inputs are read that many layers further on.</summary>
    public static Dictionary<string, Tensor> Run(MergeRecipe recipe, MergeInputs inputs, MergeOptions? options = null, CompileOptions? compileOptions = null)
    {
        options ??= MergeOptions.Default;
        compileOptions ??= CompileOptions.Default;
        var experts = recipe.ExpertLabels is null
            ? inputs.Experts.ToList()
            : recipe.ExpertLabels.Select(l => inputs.Experts.First(e => e.Label == l)).ToList();
        var all = new List<NamedSource>();
        if (inputs.Base is not null) all.Add(inputs.Base);
        all.AddRange(experts);
        var reference = all[0];
        int layers = recipe.OutputLayers ?? 1 + reference.Source.Tensors.Select(t => ScaleResolver.LayerIndex(t.Name) ?? -1).DefaultIfEmpty(-1).Max();
        var outputs = Compiler.OutputTensors(recipe, reference).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var names = outputs.Keys.ToList();
        TensorInfo OutInfo(string name) => outputs[name];

        // Global top-k: first collect every member's magnitudes, then decide the masks.
        var collector = new Interp(inputs.Base, experts, all, options, layers, null);
        foreach (var name in names)
        {
            var info = OutInfo(name);
            if (!Compiler.IsMergeable(info.DType)) continue;
            using var scope = NewDisposeScope();
            collector.Top(recipe.ExprFor(name), name);
        }
        var masks = new Dictionary<(string Key, int Pos, string Name), Tensor>();
        foreach (var ((key, pos), parts) in collector.Collected)
        {
            double density = collector.Densities[key];
            var cat = cat_(parts.Select(p => p.Values).ToList());
            long k = MergeOps.KeepCount(density, cat.numel());
            var mask = zeros(cat.numel(), ScalarType.Bool);
            if (k > 0) mask.SetTrue(0, MergeOps.DescendingOrder(cat).slice(0, 0, k, 1));
            long offset = 0;
            foreach (var (name, values) in parts)
            {
                masks[(key, pos, name)] = mask.slice(0, offset, offset + values.numel(), 1).clone();
                offset += values.numel();
                values.Dispose();
            }
            cat.Dispose();
            mask.Dispose();
        }

        var interp = new Interp(inputs.Base, experts, all, options, layers, masks);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var info = OutInfo(name);
            using var scope = NewDisposeScope();
            Tensor output;
            DType outType;
            if (!Compiler.IsMergeable(info.DType))
            {
                output = reference.Source.Load(name);
                outType = info.DType;
            }
            else
            {
                var expr = recipe.ExprFor(name);
                // A passthrough at the top (under any shifts) is the stored tensor of the layer read.
                string read = name;
                var inner = expr;
                while (inner is ShiftLayers sh)
                {
                    read = ScaleResolver.ShiftLayer(read, sh.Offset)!;
                    inner = sh.Value;
                }
                if (inner is Passthrough { Source: BaseModel or ModelTensor or Pick { Stack: Experts } } p)
                {
                    var src = interp.SourceOf(p.Source);
                    output = src.Source.Load(read);
                    var d = Info(src, read).DType;
                    outType = Compiler.IsMergeable(d) ? compileOptions.OutputDType ?? d : d;
                }
                else
                {
                    output = (Tensor)interp.Top(expr, name);
                    outType = compileOptions.OutputDType ?? info.DType;
                }
            }
            result[name] = output.to(DTypes.ToTorch(outType)).cpu().clone().MoveToOuterDisposeScope();
        }
        foreach (var m in masks.Values) m.Dispose();
        return result;
    }

    static Tensor cat_(List<Tensor> parts) => parts.Count == 1 ? parts[0].alias() : cat(parts, 0);

    static TensorInfo Info(NamedSource s, string name) =>
        s.Source.TryGetInfo(name, out var info) ? info : throw new RecipeException(name, $"missing from '{s.Label}'");

    sealed class Interp(NamedSource? baseModel, List<NamedSource> experts, List<NamedSource> all, MergeOptions options, int layers,
        Dictionary<(string Key, int Pos, string Name), Tensor>? masks)
    {
        public Dictionary<(string Key, int Pos), List<(string Name, Tensor Values)>> Collected { get; } = [];
        public Dictionary<string, double> Densities { get; } = [];

        /// <summary>The tensor inputs are read from: the parameter's own name, unless inside <see cref="ShiftLayers"/>.</summary>
        string read = "";

        /// <summary>Evaluates the expression of parameter <paramref name="name"/> (factors and noise use this name).</summary>
        public object Top(Expr e, string name)
        {
            read = name;
            return Eval(e, name);
        }

        public NamedSource SourceOf(Expr e) => e switch
        {
            BaseModel => baseModel!,
            ModelTensor m => all.First(x => x.Label == m.Model),
            Pick { Stack: Experts } p => experts[p.Index],
            _ => throw new NotSupportedException($"reference interpreter: passthrough of {e}"),
        };

        Tensor LoadCompute(NamedSource s)
        {
            var raw = s.Source.Load(read);
            var type = options.ComputeDType ?? DTypes.ToTorch(Info(all[0], read).DType);
            return raw.to(type);
        }

        static List<Tensor> Items(object v) => v is List<Tensor> l ? l : [(Tensor)v];

        public object Eval(Expr e, string name)
        {
            switch (e)
            {
                case BaseModel: return LoadCompute(baseModel!);
                case ModelTensor m: return LoadCompute(all.First(x => x.Label == m.Model));
                case Experts: return experts.Select(x => LoadCompute(x)).ToList();
                case ShiftLayers sh:
                    {
                        string saved = read;
                        read = ScaleResolver.ShiftLayer(read, sh.Offset)!;
                        try { return Eval(sh.Value, name); }
                        finally { read = saved; }
                    }
                case StackOf s:
                    return s.Items.SelectMany(i => Items(Eval(i, name))).ToList();
                case Pick p: return ((List<Tensor>)Eval(p.Stack, name))[p.Index];
                case TaskVectors t:
                    {
                        var b = (Tensor)Eval(t.Base, name);
                        return ((List<Tensor>)Eval(t.Stack, name)).Select(x => x - b).ToList();
                    }
                case Sparsify s:
                    {
                        var v = Eval(s.Value, name);
                        var items = Items(v);
                        var outs = items.Select((x, pos) => Sparsify(s, x, pos, name)).ToList();
                        return v is Tensor ? outs[0] : outs;
                    }
                case ElectSign s: return MergeOps.ElectSign((List<Tensor>)Eval(s.Stack, name), s.Rule, s.Tie).ToList();
                case Scale s:
                    {
                        double f = ScaleResolver.Resolve(s.Factor, name, layers);
                        var v = Eval(s.Value, name);
                        return v is Tensor t ? t.Times(f) : Items(v).Select(x => x.Times(f)).ToList();
                    }
                case Ir.Reduce r:
                    {
                        var st = (List<Tensor>)Eval(r.Stack, name);
                        return r.Op switch
                        {
                            Reduction.Sum => MergeOps.Sum(st),
                            Reduction.Mean => MergeOps.Mean(st),
                            _ => MergeOps.DisjointMean(st),
                        };
                    }
                case Weighted w: return MergeOps.Weighted((List<Tensor>)Eval(w.Stack, name), w.Weights);
                case DisjointWeightedMean w: return MergeOps.DisjointWeightedMean((List<Tensor>)Eval(w.Stack, name), w.Weights);
                case Add a:
                    {
                        var l = Eval(a.Left, name);
                        var r = Eval(a.Right, name);
                        if (l is Tensor lt) return lt.Plus((Tensor)r);
                        var ls = (List<Tensor>)l;
                        return r is Tensor rt ? ls.Select(x => x.Plus(rt)).ToList() : ls.Zip((List<Tensor>)r, (x, y) => x.Plus(y)).ToList();
                    }
                case Lerp l:
                    {
                        var p = (List<Tensor>)Eval(l.Pair, name);
                        return MergeOps.Lerp(p[0], p[1], ScaleResolver.Resolve(l.T, name, layers));
                    }
                case Slerp s:
                    {
                        var p = (List<Tensor>)Eval(s.Pair, name);
                        return MergeOps.Slerp(p[0], p[1], ScaleResolver.Resolve(s.T, name, layers));
                    }
                case Combine c:
                    return CombineOps.Apply(c.Method.Resolve(f => ScaleResolver.Resolve(f, name, layers)), (List<Tensor>)Eval(c.Stack, name));
                case RescaleL1 r:
                    {
                        var v = Eval(r.Value, name);
                        var reference = Eval(r.Reference, name);
                        if (v is Tensor t) return CombineOps.RescaleL1(t, (Tensor)reference);
                        return ((List<Tensor>)v).Zip((List<Tensor>)reference, CombineOps.RescaleL1).ToList();
                    }
                case ModelStock m: return MergeOps.ModelStock((List<Tensor>)Eval(m.Experts, name), (Tensor)Eval(m.Base, name));
                case Passthrough p: return Eval(p.Source, name);
                default: throw new NotSupportedException($"reference interpreter: {e.GetType().Name}");
            }
        }

        Tensor Sparsify(Sparsify s, Tensor x, int pos, string name)
        {
            var method = s.Factors is null ? s.Method : s.Factors.Apply(s.Method, f => ScaleResolver.Resolve(f, name, layers));
            switch (method)
            {
                case TopK { Scope: TopKScope.Global, Density: < 1 }:
                    {
                        string key = s.ToString();
                        if (masks is null)
                        {
                            Densities[key] = method.Density;
                            if (!Collected.TryGetValue((key, pos), out var list)) Collected[(key, pos)] = list = [];
                            if (!list.Any(p => p.Name == name))
                                list.Add((name, x.abs().to(ScalarType.Float32).flatten().clone().MoveToOuterDisposeScope()));
                            return x;
                        }
                        var mask = masks[(key, pos, name)].to(x.device).reshape(x.shape);
                        return where(mask, x, zeros_like(x));
                    }
                case TopK t: return MergeOps.TopK(x, t.Density, t.Rounding);
                case Bernoulli b:
                    {
                        using var noise = options.Noise(new NoiseRequest(name, pos, x.shape, options.Seed));
                        return MergeOps.Dare(x, noise, b.Density, b.Rescale);
                    }
                case Breadcrumbs bc: return MergeOps.Breadcrumbs(x, bc.Density, bc.Gamma, bc.Rounding);
                case Della d:
                    {
                        using var noise = options.Noise(new NoiseRequest(name, pos, x.shape, options.Seed));
                        return MergeOps.Della(x, noise, d);
                    }
                default: throw new NotSupportedException(method.ToString());
            }
        }
    }
}
