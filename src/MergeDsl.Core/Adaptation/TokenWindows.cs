using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Token windows of a language model's adaptation: each step draws, per task, <c>batch</c> windows of
/// <c>length</c> consecutive tokens at uniformly random offsets (seeded). A window's input is its tokens; its labels
/// are tokens 1..L−1, the targets of the predictions at positions 0..L−2 (read by the supervised objective only).
/// </summary>
public sealed class TokenWindows
{
    readonly IReadOnlyList<TextTaskData> tasks;
    readonly int batch, length;
    readonly Generator gen;
    readonly Device device;

    /// <summary>Checks that every task holds at least <paramref name="length"/> (≥ 2) tokens.</summary>
    public TokenWindows(IReadOnlyList<TextTaskData> tasks, int batch, int length, long seed, Device? device = null)
    {
        if (tasks.Count == 0) throw new ArgumentException("adaptation needs text for at least one task");
        if (batch <= 0) throw new SettingException("batch per task", $"must be positive, got {batch}");
        if (length < 2) throw new SettingException("sequence length", $"must be at least 2 (one prediction), got {length}");
        foreach (var t in tasks)
            if (t.Tokens.Count < length)
                throw new ArgumentException($"{t.Source}: {t.Tokens.Count} tokens, fewer than the sequence length {length}");
        this.tasks = tasks; this.batch = batch; this.length = length;
        this.device = device ?? CPU;
        gen = new Generator((ulong)seed);
    }

    /// <summary>One [batch, length] int64 window batch per task, in task order, with its next-token labels [batch·(length−1)].</summary>
    public IReadOnlyList<(Tensor Input, Tensor? Labels)> Next() => tasks.Select(t =>
    {
        var starts = torch.randint(0, t.Tokens.Count - length + 1, [batch], dtype: ScalarType.Int64, generator: gen).data<long>().ToArray();
        var flat = new long[batch * length];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < length; i++) flat[b * length + i] = t.Tokens[(int)starts[b] + i];
        var ids = torch.tensor(flat, [batch, length]).to(device);
        return (ids, (Tensor?)ids.narrow(1, 1, length - 1).reshape(-1));
    }).ToList();

    /// <summary>The first <paramref name="count"/> windows of each task, drawn once with <paramref name="seed"/>: a fixed evaluation set.</summary>
    public static IReadOnlyList<Tensor> Fixed(IReadOnlyList<TextTaskData> tasks, int count, int length, long seed, Device? device = null)
        => new TokenWindows(tasks, count, length, seed, device).Next().Select(b => b.Input).ToList();
}
