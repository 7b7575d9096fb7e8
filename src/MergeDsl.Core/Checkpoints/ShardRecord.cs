namespace MergeDsl.Core.Checkpoints;

/// <summary>One finished output shard: what a resumed run verifies and a part manifest lists.</summary>
/// <param name="Index">Shard index in the output's layout (0-based).</param>
/// <param name="FileName">The shard's file name (e.g. <c>model-00002-of-00008.safetensors</c>).</param>
/// <param name="Bytes">File length.</param>
/// <param name="Sha256">SHA-256 of the whole file, lower-case hex.</param>
public sealed record ShardRecord(int Index, string FileName, long Bytes, string Sha256);
