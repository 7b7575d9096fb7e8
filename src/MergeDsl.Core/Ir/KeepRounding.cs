namespace MergeDsl.Core.Ir;

/// <summary>How a density becomes a count of kept entries (top-k, breadcrumbs).</summary>
public enum KeepRounding
{
    /// <summary>k = round(density·n), halves away from zero (MergeDsl's documented rule, the default).</summary>
    Nearest,
    /// <summary>k = ⌊density·n⌋: mergekit's <c>int(density * numel)</c>.</summary>
    Floor,
}
