using System.Globalization;
using System.Text.Json.Nodes;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// A config.json <c>rope_scaling</c> the runtime implements: a static transform of each rotary inverse frequency
/// θ^(−2i/d), applied once where the cos/sin table is built (<see cref="RotaryEmbedding"/>), as transformers'
/// <c>modeling_rope_utils</c> computes it for the same type. Neither type changes the attention scale.
/// Absent, null and type <c>default</c> mean no scaling (a null <see cref="RopeScaling"/>); every other type
/// (dynamic, ntk, yarn, longrope, su, …) is refused by <see cref="FromJson"/>.
/// </summary>
public abstract record RopeScaling
{
    RopeScaling() { }

    /// <summary>The type's name (<c>rope_type</c> or legacy <c>type</c>).</summary>
    public abstract string Type { get; }

    /// <summary>The context-extension factor (<c>factor</c>).</summary>
    public abstract double Factor { get; init; }

    /// <summary>The scaled inverse frequency (radians per position) of one rotary pair whose unscaled one is <paramref name="invFreq"/>.</summary>
    public abstract double ScaleInverseFrequency(double invFreq);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad field as <c>rope_scaling.&lt;key&gt;</c>.</summary>
    public RopeScaling Validate() => Check("rope_scaling");

    /// <summary>Validates, naming bad fields under <paramref name="key"/>.</summary>
    private protected abstract RopeScaling Check(string key);

    /// <summary>The <c>rope_scaling</c> object transformers reads back to this scaling.</summary>
    public abstract JsonObject ToJsonObject();

    /// <summary>
    /// Position interpolation (<c>"linear"</c>): every inverse frequency divided by <paramref name="Factor"/>, so
    /// position p·factor is rotated as the unscaled model rotates position p.
    /// </summary>
    /// <param name="Factor">How many times longer the context is than the one the model was pretrained on; positive.</param>
    public sealed record Linear(double Factor) : RopeScaling
    {
        /// <inheritdoc/>
        public override string Type => "linear";

        /// <inheritdoc/>
        public override double ScaleInverseFrequency(double invFreq) => invFreq / Factor;

        private protected override RopeScaling Check(string key)
        {
            CheckFactor(key, Factor);
            return this;
        }

        /// <summary>
        /// <c>{"type": "linear", "factor": F}</c>: the legacy key, which every reader takes: transformers maps it to
        /// <c>rope_type</c>, while DeepSeek-MoE's remote code and transformers before 4.43 read only <c>type</c> (and the
        /// latter refuse any third key).
        /// </summary>
        public override JsonObject ToJsonObject() => new() { ["type"] = Type, ["factor"] = Factor };
    }

    /// <summary>
    /// Llama 3.1's frequency-dependent scaling (<c>"llama3"</c>). With L = <paramref name="OriginalMaxPositionEmbeddings"/>,
    /// a pair whose wavelength 2π/f is longer than L/<paramref name="LowFreqFactor"/> is interpolated (f/factor), one
    /// shorter than L/<paramref name="HighFreqFactor"/> is kept (f), and one in between gets
    /// (1 − s)·f/factor + s·f with s = (L/wavelength − low)/(high − low), which meets both ends continuously.
    /// </summary>
    /// <param name="Factor">Divisor of the low-frequency (long-wavelength) bands; positive (8 in Llama 3.1, 32 in 3.2).</param>
    /// <param name="LowFreqFactor">L divided by it is the wavelength above which bands are fully divided; positive.</param>
    /// <param name="HighFreqFactor">L divided by it is the wavelength below which bands are kept; greater than <paramref name="LowFreqFactor"/>.</param>
    /// <param name="OriginalMaxPositionEmbeddings">The pretraining context L (8192 in Llama 3); positive.</param>
    public sealed record Llama3(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings) : RopeScaling
    {
        /// <inheritdoc/>
        public override string Type => "llama3";

        /// <inheritdoc/>
        public override double ScaleInverseFrequency(double invFreq)
        {
            double wavelength = 2 * Math.PI / invFreq;
            double context = OriginalMaxPositionEmbeddings;
            if (wavelength < context / HighFreqFactor) return invFreq;
            if (wavelength > context / LowFreqFactor) return invFreq / Factor;
            double s = (context / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
            return (1 - s) * invFreq / Factor + s * invFreq;
        }

        private protected override RopeScaling Check(string key)
        {
            CheckFactor(key, Factor);
            if (!(LowFreqFactor > 0) || double.IsInfinity(LowFreqFactor))
                throw new ArgumentException($"{key}.low_freq_factor must be a positive number, got {Show(LowFreqFactor)}");
            if (!(HighFreqFactor > LowFreqFactor) || double.IsInfinity(HighFreqFactor))
                throw new ArgumentException($"{key}.high_freq_factor {Show(HighFreqFactor)} must be greater than low_freq_factor {Show(LowFreqFactor)}");
            if (OriginalMaxPositionEmbeddings <= 0)
                throw new ArgumentException($"{key}.original_max_position_embeddings must be positive, got {OriginalMaxPositionEmbeddings}");
            return this;
        }

        /// <inheritdoc/>
        public override JsonObject ToJsonObject() => new()
        {
            ["rope_type"] = Type,
            ["factor"] = Factor,
            ["low_freq_factor"] = LowFreqFactor,
            ["high_freq_factor"] = HighFreqFactor,
            ["original_max_position_embeddings"] = OriginalMaxPositionEmbeddings,
        };
    }

    static void CheckFactor(string key, double factor)
    {
        if (!(factor > 0) || double.IsInfinity(factor))
            throw new ArgumentException($"{key}.factor must be a positive number, got {Show(factor)}");
    }

    static string Show(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>
    /// Reads a <c>rope_scaling</c> (or transformers 5's <c>rope_parameters</c>) value: null or absent, or type
    /// <c>default</c>, gives null; <c>linear</c> and <c>llama3</c> give their scaling, validated. The type is
    /// <c>rope_type</c> or the legacy <c>type</c> (both, when given, must agree). Keys the type does not use
    /// (<c>rope_theta</c> in <c>rope_parameters</c>, for one) are ignored, as transformers ignores them.
    /// </summary>
    /// <param name="node">The value of the key.</param>
    /// <param name="key">The key it was read from, named in errors.</param>
    /// <exception cref="ArgumentException">An unsupported type, or a missing, non-numeric or out-of-range field, in one line naming it.</exception>
    public static RopeScaling? FromJson(JsonNode? node, string key = "rope_scaling")
    {
        if (node is null) return null;
        if (node is not JsonObject o) throw new ArgumentException($"{key} must be an object or null, got {node.ToJsonString()}");
        string? ropeType = Text("rope_type"), legacyType = Text("type");
        if (ropeType is not null && legacyType is not null && ropeType != legacyType)
            throw new ArgumentException($"{key} names two types: rope_type '{ropeType}' and type '{legacyType}'");
        string type = ropeType ?? legacyType ?? throw new ArgumentException($"{key} {o.ToJsonString()} has no rope_type");
        if (type == "default") return null;
        RopeScaling scaling = type switch
        {
            "linear" => new Linear(Number("factor")),
            "llama3" => new Llama3(Number("factor"), Number("low_freq_factor"), Number("high_freq_factor"), Integer("original_max_position_embeddings")),
            _ => throw new ArgumentException($"{key} type '{type}' is not supported (the runtime implements linear and llama3; dynamic, ntk, yarn, longrope and other types are refused)"),
        };
        return scaling.Check(key);

        string? Text(string k)
        {
            var n = o[k];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue<string>(out var s)) return s;
            throw new ArgumentException($"{key}.{k} must be a string, got {n.ToJsonString()}");
        }
        double Number(string k)
        {
            var n = o[k] ?? throw new ArgumentException($"{key}.{k} is missing (needed by rope_type '{type}')");
            if (n is JsonValue v && v.TryGetValue<double>(out var d)) return d;
            throw new ArgumentException($"{key}.{k} must be a number, got {n.ToJsonString()}");
        }
        int Integer(string k)
        {
            var n = o[k] ?? throw new ArgumentException($"{key}.{k} is missing (needed by rope_type '{type}')");
            // 8192.0 is an integer too: transformers computes with whatever number it is given.
            if (n is JsonValue v && v.TryGetValue<double>(out var d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue) return (int)d;
            throw new ArgumentException($"{key}.{k} must be an integer, got {n.ToJsonString()}");
        }
    }
}
