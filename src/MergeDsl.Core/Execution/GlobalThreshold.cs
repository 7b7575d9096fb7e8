namespace MergeDsl.Core.Execution;

/// <summary>
/// The exact k-th largest magnitude of a global top-k group at one stack position, as a float32 bit
/// pattern: entries above it are kept, and the first <paramref name="TieQuota"/> entries equal to it
/// (in plan order, then flat index).
/// </summary>
/// <param name="Bits">The threshold magnitude as float32 bits.</param>
/// <param name="TieQuota">How many entries equal to the threshold are kept.</param>
/// <param name="Kept">How many entries the group keeps in all.</param>
/// <param name="Total">How many entries the group has.</param>

public sealed record GlobalThreshold(long Bits, long TieQuota, long Kept, long Total)
{
    /// <summary>Entries of the whole group (at this position) whose magnitude equals the threshold: when
    /// <see cref="TieQuota"/> is neither 0 nor this, which tensor keeps how many ties depends on the order.</summary>
    public long Equal { get; init; }
}
