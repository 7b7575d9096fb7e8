using System.Text.RegularExpressions;
using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Compilation;

/// <summary>Resolves parameter-dependent scale factors to numbers at compile time.</summary>
public static partial class ScaleResolver
{
    [GeneratedRegex(@"\.(\d+)\.")]
    private static partial Regex LayerIndexRegex();

    /// <summary>The layer index of a parameter: the first <c>.N.</c> in its name, or null.</summary>
    public static int? LayerIndex(string name)
    {
        var m = LayerIndexRegex().Match(name);
        return m.Success && int.TryParse(m.Groups[1].Value, out int i) ? i : null;
    }

    /// <summary>The name with its layer index (the first <c>.N.</c>) plus <paramref name="offset"/>, or null outside the layers.</summary>
    public static string? ShiftLayer(string name, int offset)
    {
        var m = LayerIndexRegex().Match(name);
        if (!m.Success || !int.TryParse(m.Groups[1].Value, out int i)) return null;
        var g = m.Groups[1];
        return string.Concat(name.AsSpan(0, g.Index), (i + offset).ToString(System.Globalization.CultureInfo.InvariantCulture), name.AsSpan(g.Index + g.Length));
    }

    /// <summary>The factor's value for a parameter of a model with <paramref name="layerCount"/> layers.</summary>
    public static double Resolve(ScaleFactor factor, string name, int layerCount) => factor switch
    {
        ConstantFactor c => c.Value,
        LayerGradient g => Gradient(g.Anchors, name, layerCount),
        ByNameFactor n => Resolve(n.Rules.FirstOrDefault(r => r.Pattern.Matches(name))?.Value ?? n.Fallback, name, layerCount),
        ShareFactor s => Share(s, name, layerCount),
        _ => throw new RecipeException(name, $"unknown scale factor {factor.GetType().Name}"),
    };

    static double Share(ShareFactor s, string name, int layerCount)
    {
        if (s.Index < 0 || s.Index >= s.Parts.Count) throw new RecipeException(name, $"share: part {s.Index} of {s.Parts.Count}");
        var parts = s.Parts.Select(p => Resolve(p, name, layerCount)).ToArray();
        double total = parts.Sum();
        if (total == 0) throw new RecipeException(name, $"the weights [{string.Join(", ", parts.Select(ExprText.Num))}] sum to 0");
        return parts[s.Index] / total;
    }

    static double Gradient(IReadOnlyList<double> anchors, string name, int layerCount)
    {
        if (anchors.Count == 0) throw new RecipeException(name, "byLayer needs at least one value");
        int? layer = LayerIndex(name);
        if (layer is null || anchors.Count == 1) return anchors[0];
        double t = layerCount > 1 ? (double)layer.Value / (layerCount - 1) : 0.0;
        double pos = Math.Clamp(t, 0, 1) * (anchors.Count - 1);
        int i0 = (int)Math.Floor(pos);
        int i1 = Math.Min(anchors.Count - 1, i0 + 1);
        double frac = pos - i0;
        return (1 - frac) * anchors[i0] + frac * anchors[i1];
    }
}
