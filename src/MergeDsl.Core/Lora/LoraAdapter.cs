using System.Globalization;
using System.Text.RegularExpressions;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Lora;

/// <summary>
/// A PEFT LoRA adapter folder (<c>adapter_config.json</c> + <c>adapter_model.safetensors</c>), read and checked
/// as a hostile model folder: every tensor must be a <c>lora_A</c>/<c>lora_B</c> pair of a module
/// <c>target_modules</c> names, with the configured rank. Its update of a weight is W' = W + scale·B·A.
/// </summary>
public sealed class LoraAdapter : IDisposable
{
    /// <summary>The adapter's configuration file.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>The adapter's weights file.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    const string Prefix = "base_model.model.";
    readonly Checkpoint _weights;
    readonly Dictionary<string, LoraModule> _byWeight;

    LoraAdapter(string folder, Checkpoint weights, IReadOnlyList<LoraModule> modules)
    {
        Folder = folder;
        _weights = weights;
        Modules = modules;
        _byWeight = modules.ToDictionary(m => m.Weight, StringComparer.Ordinal);
    }

    /// <summary>The adapter folder.</summary>
    public string Folder { get; }

    /// <summary>The adapted modules, in file order.</summary>
    public IReadOnlyList<LoraModule> Modules { get; }

    /// <summary>The adapter's weights file, opened (for change checks).</summary>
    public Checkpoint Weights => _weights;

    /// <summary>The module that changes base tensor <paramref name="weight"/>, if any.</summary>
    public bool TryGetModule(string weight, out LoraModule module) => _byWeight.TryGetValue(weight, out module!);

    /// <summary>Opens and checks an adapter folder.</summary>
    /// <exception cref="CheckpointFormatException">Missing files, a malformed config, or tensors that do not fit it (one line).</exception>
    public static LoraAdapter Open(string folder, InputFilePolicy? policy = null)
    {
        string configFile = Path.Combine(folder, ConfigFileName);
        string weightsFile = Path.Combine(folder, WeightsFileName);
        if (!Directory.Exists(folder)) throw new CheckpointFormatException(folder, "no such adapter folder");
        if (!File.Exists(configFile))
            throw new CheckpointFormatException(folder, $"no {ConfigFileName}: not a PEFT adapter folder");
        if (!File.Exists(weightsFile))
        {
            string hint = File.Exists(Path.Combine(folder, "adapter_model.bin"))
                ? $" (it has adapter_model.bin: convert it first with `mergedsl convert {folder} --out DIR`)"
                : "";
            throw new CheckpointFormatException(folder, $"no {WeightsFileName}{hint}");
        }
        var config = ParseConfig(configFile, ModelFiles.ReadAll(configFile, ModelFiles.MaxJsonBytes, folder, policy));
        var weights = Checkpoint.Open(weightsFile, zeroCopy: false, policy);
        try
        {
            return new LoraAdapter(folder, weights, Pair(weightsFile, weights, config));
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    sealed record Config(int R, double Alpha, bool RsLora, bool FanInFanOut, IReadOnlyList<string>? Targets, string? TargetRegex,
        IReadOnlyList<(string Key, int R)> RankPattern, IReadOnlyList<(string Key, double Alpha)> AlphaPattern);

    static Config ParseConfig(string file, byte[] bytes)
    {
        JsonNode root;
        try { root = StrictJson.Parse(bytes); }
        catch (JsonSyntaxException e) { throw new CheckpointFormatException(file, $"not valid JSON ({e.Message})"); }
        if (root is not JsonObject o) throw new CheckpointFormatException(file, $"expected an object, found {root.Kind}");
        CheckpointFormatException Bad(string key, string problem) => new(file, $"{key}: {problem}");
        if (o["peft_type"] is JsonString { Value: not "LORA" } pt)
            throw Bad("peft_type", $"'{TerminalTextOf(pt.Value)}' adapters are not supported (only LORA)");
        if (o["use_dora"] is JsonBool { Value: true }) throw Bad("use_dora", "DoRA adapters are not supported (only plain LoRA)");
        if (o["lora_bias"] is JsonBool { Value: true }) throw Bad("lora_bias", "LoRA bias terms are not supported");
        int Int(JsonNode? n, string key, int dflt) => n switch
        {
            null or JsonNull => dflt,
            JsonNumber num when num.TryGetInt64(out long v) && v is > 0 and <= int.MaxValue => (int)v,
            _ => throw Bad(key, "expected a positive integer"),
        };
        double Num(JsonNode? n, string key, double dflt) => n switch
        {
            null or JsonNull => dflt,
            JsonNumber num when double.TryParse(num.Text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) => v,
            _ => throw Bad(key, "expected a finite number"),
        };
        bool Flag(string key) => o[key] switch
        {
            null or JsonNull => false,
            JsonBool b => b.Value,
            _ => throw Bad(key, "expected true or false"),
        };
        // PEFT's LoraConfig defaults where a key is absent: r = 8, lora_alpha = 8.
        int r = Int(o["r"], "r", 8);
        double alpha = Num(o["lora_alpha"], "lora_alpha", 8);
        IReadOnlyList<string>? targets = null;
        string? regex = null;
        switch (o["target_modules"])
        {
            case null or JsonNull: break;
            case JsonString s: regex = s.Value; break;
            case JsonArray a:
                targets = a.Items.Select(i => i is JsonString s ? s.Value : throw Bad("target_modules", "expected a list of module names")).ToList();
                break;
            default: throw Bad("target_modules", "expected a list of module names or a regular expression");
        }
        List<(string, T)> Pattern<T>(string key, Func<JsonNode, string, T> value)
        {
            var result = new List<(string, T)>();
            switch (o[key])
            {
                case null or JsonNull: break;
                case JsonObject p: foreach (var (k, v) in p.Members) result.Add((k, value(v, $"{key}.{k}"))); break;
                default: throw Bad(key, "expected an object of module name → value");
            }
            return result;
        }
        return new Config(r, alpha, Flag("use_rslora"), Flag("fan_in_fan_out"), targets, regex,
            Pattern("rank_pattern", (v, k) => Int(v, k, 0)), Pattern("alpha_pattern", (v, k) => Num(v, k, 0)));
    }

    static string TerminalTextOf(string s) => Text.TerminalText.Sanitize(s);

    /// <summary>PEFT's pattern rule: key matches a module when the module name is <c>(anything.)key</c>.</summary>
    static bool PatternMatches(string key, string module) =>
        Regex.IsMatch(module, $"^(.*\\.)?(?:{key})$", RegexOptions.None, TimeSpan.FromSeconds(1));

    static bool Targeted(Config c, string module)
    {
        if (c.TargetRegex is { } rx) return Regex.IsMatch(module, $"^(?:{rx})$", RegexOptions.None, TimeSpan.FromSeconds(1));
        if (c.Targets is null) return true;
        return c.Targets.Any(t => t == "all-linear" || module == t || module.EndsWith("." + t, StringComparison.Ordinal));
    }

    static IReadOnlyList<LoraModule> Pair(string file, Checkpoint weights, Config c)
    {
        var a = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var b = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var t in weights.Tensors)
        {
            string shown = TerminalTextOf(t.Name);
            if (!t.Name.StartsWith(Prefix, StringComparison.Ordinal))
                throw new CheckpointFormatException(file, $"tensor '{shown}' is not a LoRA weight (expected base_model.model.<module>.lora_A.weight / lora_B.weight)");
            string rest = t.Name[Prefix.Length..];
            Dictionary<string, TensorInfo> side;
            string module;
            if (rest.EndsWith(".lora_A.weight", StringComparison.Ordinal)) (side, module) = (a, rest[..^".lora_A.weight".Length]);
            else if (rest.EndsWith(".lora_B.weight", StringComparison.Ordinal)) (side, module) = (b, rest[..^".lora_B.weight".Length]);
            else
                throw new CheckpointFormatException(file,
                    $"tensor '{shown}' is not a lora_A/lora_B weight (embedding adapters, biases and modules_to_save are not supported)");
            if (!DTypes.IsFloatingPoint(t.DType) || t.Shape.Length != 2)
                throw new CheckpointFormatException(file, $"tensor '{shown}' must be a 2-D float tensor, is {t.DType} {t.ShapeText}");
            if (!a.ContainsKey(module) && !b.ContainsKey(module)) order.Add(module);
            side[module] = t;
        }
        if (order.Count == 0) throw new CheckpointFormatException(file, "holds no LoRA weights");
        var modules = new List<LoraModule>();
        foreach (string m in order)
        {
            string shown = TerminalTextOf(m);
            if (!a.TryGetValue(m, out var ta)) throw new CheckpointFormatException(file, $"module '{shown}' has lora_B but no lora_A");
            if (!b.TryGetValue(m, out var tb)) throw new CheckpointFormatException(file, $"module '{shown}' has lora_A but no lora_B");
            if (!Targeted(c, m))
                throw new CheckpointFormatException(file, $"module '{shown}' is not among adapter_config.json's target_modules");
            int r = c.RankPattern.FirstOrDefault(p => PatternMatches(p.Key, m)) is { Key: not null } rp ? rp.R : c.R;
            double alpha = c.AlphaPattern.FirstOrDefault(p => PatternMatches(p.Key, m)) is { Key: not null } ap ? ap.Alpha : c.Alpha;
            if (ta.Shape[0] != r || tb.Shape[1] != r)
                throw new CheckpointFormatException(file,
                    $"module '{shown}': rank mismatch: lora_A is {ta.ShapeText}, lora_B is {tb.ShapeText}, adapter_config.json says r = {r}");
            double scale = c.RsLora ? alpha / Math.Sqrt(r) : alpha / r;
            modules.Add(new LoraModule(m, m + ".weight", ta.Name, tb.Name, r, scale, c.FanInFanOut));
        }
        return modules;
    }

    /// <summary>
    /// The update scale·B·A of <paramref name="module"/> in float64, shaped like the base weight ([out, in], or
    /// [in, out] with fan_in_fan_out). The caller disposes it.
    /// </summary>
    public Tensor Delta(LoraModule module)
    {
        using var scope = NewDisposeScope();
        using var a = _weights.Load(module.A);
        using var b = _weights.Load(module.B);
        var d = b.to_type(ScalarType.Float64).matmul(a.to_type(ScalarType.Float64)).mul_(module.Scale);
        if (module.FanInFanOut) d = d.t();
        return d.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Closes the weights file.</summary>
    public void Dispose() => _weights.Dispose();
}
