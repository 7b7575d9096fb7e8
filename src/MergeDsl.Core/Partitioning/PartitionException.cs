namespace MergeDsl.Core.Partitioning;

/// <summary>A part of a partitioned merge is missing, unfinished, damaged or from another plan; the message names it.</summary>
public sealed class PartitionException(string message) : Exception(message);
