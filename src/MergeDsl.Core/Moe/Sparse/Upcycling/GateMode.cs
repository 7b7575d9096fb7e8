namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// How router rows are initialised when dense experts are upcycled into a sparse MoE (mergekit-moe's <c>gate_mode</c>).
/// Each row is one expert's vector; the router's logit for a token is the dot product of the token's hidden state
/// with that row.
/// </summary>
public enum GateMode
{
    /// <summary>
    /// <c>hidden</c> (also <c>hidden_last</c>): per layer, the base model's residual stream entering that layer at the
    /// last token of each positive prompt, averaged over the prompts, minus the same for the negative prompts,
    /// L2-normalised.
    /// </summary>
    Hidden,
    /// <summary><c>hidden_avg</c>: as <see cref="Hidden"/> but each prompt contributes the mean over its tokens.</summary>
    HiddenAverage,
    /// <summary>
    /// <c>cheap_embed</c>: the sum of the token embeddings of every positive prompt, L2-normalised (minus the same of
    /// the negative prompts, normalised again); the same row in every layer.
    /// </summary>
    CheapEmbed,
    /// <summary><c>random</c>: every router entry drawn from N(0, 1) (seeded).</summary>
    Random,
    /// <summary><c>uniform_random</c>: U(−1/√hidden, 1/√hidden), torch.nn.Linear's default initialisation (seeded).</summary>
    UniformRandom,
}

/// <summary>mergekit's names of <see cref="GateMode"/> values.</summary>
public static class GateModes
{
    /// <summary>The accepted names, in mergekit's spelling.</summary>
    public static readonly IReadOnlyList<(string Name, GateMode Mode)> Names =
    [
        ("hidden", GateMode.Hidden),
        ("hidden_last", GateMode.Hidden),
        ("hidden_avg", GateMode.HiddenAverage),
        ("cheap_embed", GateMode.CheapEmbed),
        ("random", GateMode.Random),
        ("uniform_random", GateMode.UniformRandom),
    ];

    /// <summary>The mode called <paramref name="name"/>.</summary>
    /// <exception cref="SettingException">An unknown name (the message lists the known ones).</exception>
    public static GateMode Parse(string name)
        => Names.Where(n => n.Name == name).Select(n => (GateMode?)n.Mode).FirstOrDefault()
           ?? throw new SettingException("gate_mode", $"unknown gate mode '{name}' (expected {string.Join(", ", Names.Select(n => n.Name))})");

    /// <summary>mergekit's name of <paramref name="mode"/>.</summary>
    public static string Name(this GateMode mode) => Names.First(n => n.Mode == mode).Name;

    /// <summary>True for the modes that read prompts (every mode but the random ones).</summary>
    public static bool NeedsPrompts(this GateMode mode) => mode is not (GateMode.Random or GateMode.UniformRandom);
}
