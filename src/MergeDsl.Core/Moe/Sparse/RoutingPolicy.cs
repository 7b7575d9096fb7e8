using System.Globalization;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>
/// How a sparse MoE block chooses each token's experts from the router's probabilities (a softmax over all
/// experts). Immutable; the text form (<c>top-k:2</c>, <c>top-p:0.6</c>, <c>top-p:0.6,max:4</c>) round-trips
/// through <see cref="Parse"/> and <see cref="ToString"/>.
/// </summary>
public abstract record RoutingPolicy
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the value when the policy cannot route over <paramref name="numExperts"/> experts.</summary>
    public abstract RoutingPolicy Validate(int numExperts);

    /// <summary>The largest number of experts a token can be sent to over <paramref name="numExperts"/> experts.</summary>
    public abstract int MaxSelected(int numExperts);

    /// <summary>
    /// Reads <c>top-k:K</c> or <c>top-p:P</c> / <c>top-p:P,max:M</c> (without <c>max</c>, every expert may be chosen).
    /// </summary>
    /// <exception cref="FormatException">Any other text, or a number that does not parse (the message quotes it).</exception>
    /// <exception cref="ArgumentException">k or max below 1, or p outside (0, 1].</exception>
    public static RoutingPolicy Parse(string text)
    {
        string t = text.Trim();
        FormatException Bad() => new($"routing '{text}' is not top-k:K, top-p:P or top-p:P,max:M");
        if (t.StartsWith("top-k:", StringComparison.Ordinal))
        {
            if (!int.TryParse(t["top-k:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int k)) throw Bad();
            return new TopK(k).CheckSelf();
        }
        if (t.StartsWith("top-p:", StringComparison.Ordinal))
        {
            var parts = t["top-p:".Length..].Split(',');
            if (parts.Length > 2) throw Bad();
            if (!double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double p)) throw Bad();
            int max = int.MaxValue;
            if (parts.Length == 2)
            {
                if (!parts[1].StartsWith("max:", StringComparison.Ordinal)
                    || !int.TryParse(parts[1]["max:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out max)) throw Bad();
            }
            return new TopP(p, max).CheckSelf();
        }
        throw Bad();
    }

    /// <summary>Checks what does not depend on the expert count.</summary>
    internal abstract RoutingPolicy CheckSelf();
}

/// <summary>Each token goes to its <paramref name="K"/> most probable experts (ties: the lower index first, as torch.topk on CPU).</summary>
/// <param name="K">Experts per token, at least 1 and at most the expert count.</param>
public sealed record TopK(int K) : RoutingPolicy
{
    /// <inheritdoc/>
    public override RoutingPolicy Validate(int numExperts)
    {
        CheckSelf();
        if (K > numExperts) throw new ArgumentException($"routing top-k:{K} asks for more experts than the {numExperts} the model has");
        return this;
    }

    internal override RoutingPolicy CheckSelf()
    {
        if (K < 1) throw new ArgumentException($"routing top-k:{K}: k must be at least 1");
        return this;
    }

    /// <inheritdoc/>
    public override int MaxSelected(int numExperts) => Math.Min(K, numExperts);

    /// <summary><c>top-k:K</c>.</summary>
    public override string ToString() => $"top-k:{K}";
}

/// <summary>
/// Dynamic top-p routing ("Harder Tasks Need More Experts: Dynamic Routing in MoE Models", Huang et al. 2024): per
/// token, the smallest set of experts, taken by descending probability, whose probabilities sum to at least
/// <paramref name="P"/>, capped at <paramref name="MaxExperts"/> (at least one expert is always chosen).
/// </summary>
/// <param name="P">The probability mass to reach, in (0, 1].</param>
/// <param name="MaxExperts">The most experts a token may use (int.MaxValue: no cap).</param>
public sealed record TopP(double P, int MaxExperts = int.MaxValue) : RoutingPolicy
{
    /// <inheritdoc/>
    public override RoutingPolicy Validate(int numExperts) => CheckSelf();

    internal override RoutingPolicy CheckSelf()
    {
        if (!(P > 0 && P <= 1)) throw new ArgumentException($"routing {this}: p must be in (0, 1], got {P.ToString(CultureInfo.InvariantCulture)}");
        if (MaxExperts < 1) throw new ArgumentException($"routing {this}: max must be at least 1, got {MaxExperts}");
        return this;
    }

    /// <inheritdoc/>
    public override int MaxSelected(int numExperts) => Math.Min(MaxExperts, numExperts);

    /// <summary><c>top-p:P</c>, with <c>,max:M</c> when capped.</summary>
    public override string ToString()
        => $"top-p:{P.ToString("R", CultureInfo.InvariantCulture)}" + (MaxExperts == int.MaxValue ? "" : $",max:{MaxExperts}");
}
