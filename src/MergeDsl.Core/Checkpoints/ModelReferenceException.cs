namespace MergeDsl.Core.Checkpoints;

/// <summary>A model reference (local path, Hugging Face repo id, <c>model+adapter</c>) that cannot be resolved; the message is one line.</summary>
public sealed class ModelReferenceException(string message) : Exception(message);
