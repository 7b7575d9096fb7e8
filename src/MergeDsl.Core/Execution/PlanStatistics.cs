using System.Text.Json;
using MergeDsl.Core.Compilation;

namespace MergeDsl.Core.Execution;

/// <summary>One global top-k threshold: group, stack position and the <see cref="GlobalThreshold"/> fields.</summary>
/// <param name="Group">Id of the global top-k group (the plan's <c>GlobalGroup.Id</c>).</param>
/// <param name="Position">Stack position (which expert's task vector) inside the group.</param>
/// <param name="Bits">The threshold magnitude as float32 bits.</param>
/// <param name="TieQuota">How many entries equal to the threshold the whole group keeps.</param>
/// <param name="Kept">Entries the group keeps at this position, ties included.</param>
/// <param name="Total">Entries of the group at this position.</param>
/// <param name="Equal">Entries whose magnitude equals the threshold (ties compete for <paramref name="TieQuota"/>).</param>
public sealed record ThresholdEntry(int Group, int Position, long Bits, long TieQuota, long Kept, long Total, long Equal);

/// <summary>The tie quota of one (group, position) left when a run in plan order reaches <paramref name="Tensor"/>.</summary>
/// <param name="Tensor">Name of the member tensor (an input tensor name of the group).</param>
/// <param name="Group">Id of the global top-k group.</param>
/// <param name="Position">Stack position inside the group.</param>
/// <param name="Quota">Ties at the threshold still to keep when a plan-order run reaches this tensor.</param>
public sealed record TieStart(string Tensor, int Group, int Position, long Quota);

/// <summary>
/// The whole-model statistics of a plan (global top-k): computed once, by the <c>stats</c> step of a partitioned
/// merge, and read by every part, so that the parts together keep exactly the entries one run keeps. Small: a few
/// numbers per group and position plus one tie quota per member tensor. <paramref name="Identity"/> names the run
/// (recipe, inputs, options) it belongs to; a part refuses statistics of another.
/// </summary>
/// <param name="Identity">Hash of the run (recipe, input headers, options) these statistics belong to.</param>
/// <param name="Thresholds">One threshold per group and stack position.</param>
/// <param name="TieStarts">One tie quota per member tensor, group and position.</param>
public sealed record PlanStatistics(string Identity, IReadOnlyList<ThresholdEntry> Thresholds, IReadOnlyList<TieStart> TieStarts)
{
    /// <summary>Input bytes read to compute these (statistics passes plus the tie pass).</summary>
    public long BytesRead { get; init; }

    /// <summary>Computes the statistics of <paramref name="plan"/> by streaming over its inputs (empty when it needs none).</summary>
    public static PlanStatistics Compute(MergePlan plan, MergeOptions options, string identity)
    {
        if (plan.Groups.Count == 0) return new PlanStatistics(identity, [], []);
        var thresholds = GlobalStatistics.Compute(plan, options);
        var starts = GlobalStatistics.TieStarts(plan, options, thresholds, out long tieBytes);
        return new PlanStatistics(identity,
            thresholds.OrderBy(kv => kv.Key.Group).ThenBy(kv => kv.Key.Position)
                .Select(kv => new ThresholdEntry(kv.Key.Group, kv.Key.Position, kv.Value.Bits, kv.Value.TieQuota, kv.Value.Kept, kv.Value.Total, kv.Value.Equal)).ToList(),
            plan.Tensors.Where(t => starts.ContainsKey(t.Name))
                .SelectMany(t => starts[t.Name].OrderBy(kv => kv.Key.Group).ThenBy(kv => kv.Key.Position).Select(kv => new TieStart(t.Name, kv.Key.Group, kv.Key.Position, kv.Value)))
                .ToList())
        { BytesRead = plan.StatisticsBytesRead + tieBytes };
    }

    internal IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> ThresholdMap() =>
        Thresholds.ToDictionary(t => (t.Group, t.Position), t => new GlobalThreshold(t.Bits, t.TieQuota, t.Kept, t.Total) { Equal = t.Equal });

    internal IReadOnlyDictionary<string, IReadOnlyDictionary<(int Group, int Position), long>> TieStartMap() =>
        TieStarts.GroupBy(s => s.Tensor, StringComparer.Ordinal).ToDictionary(g => g.Key,
            g => (IReadOnlyDictionary<(int Group, int Position), long>)g.ToDictionary(s => (s.Group, s.Position), s => s.Quota), StringComparer.Ordinal);

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    /// <summary>The JSON text of the statistics file.</summary>
    public string ToJson() => JsonSerializer.Serialize(new { format = "mergedsl-statistics-1", Identity, BytesRead, Thresholds, TieStarts }, Json);

    /// <summary>Reads a statistics file; <see cref="InvalidDataException"/> naming it when it is not one.</summary>
    public static PlanStatistics Read(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var o = doc.RootElement;
            if (o.GetProperty("format").GetString() != "mergedsl-statistics-1") throw new InvalidDataException($"{path}: not a mergedsl statistics file");
            var thresholds = o.GetProperty("thresholds").EnumerateArray().Select(e => new ThresholdEntry(
                e.GetProperty("group").GetInt32(), e.GetProperty("position").GetInt32(), e.GetProperty("bits").GetInt64(), e.GetProperty("tieQuota").GetInt64(),
                e.GetProperty("kept").GetInt64(), e.GetProperty("total").GetInt64(), e.GetProperty("equal").GetInt64())).ToList();
            var starts = o.GetProperty("tieStarts").EnumerateArray().Select(e => new TieStart(
                e.GetProperty("tensor").GetString()!, e.GetProperty("group").GetInt32(), e.GetProperty("position").GetInt32(), e.GetProperty("quota").GetInt64())).ToList();
            return new PlanStatistics(o.GetProperty("identity").GetString()!, thresholds, starts) { BytesRead = o.GetProperty("bytesRead").GetInt64() };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: not a readable mergedsl statistics file ({e.Message})");
        }
    }
}
