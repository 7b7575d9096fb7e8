using MergeDsl.Core.Checkpoints;
using TorchSharp;

namespace MergeDsl.Core.Execution;

/// <summary>Writes into a <see cref="CheckpointWriter"/>.</summary>
public sealed class CheckpointSink(CheckpointWriter writer) : ITensorSink
{
    /// <inheritdoc />
    public void Write(string name, torch.Tensor tensor) => writer.Write(name, tensor);
}
