namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// A tensor source computed from checkpoints (a model with a LoRA adapter applied): the executor checks them for
/// changes after a run, and the merge copies config and tokenizer files from the first one's folder.
/// </summary>
public interface ICheckpointBacked
{
    /// <summary>The checkpoints read; the first is the model whose folder holds config.json and the tokenizer.</summary>
    IReadOnlyList<Checkpoint> Checkpoints { get; }
}
