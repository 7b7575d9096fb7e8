using TorchSharp;

namespace MergeDsl.Core.Execution;

/// <summary>Where merged tensors go. Called from one writer thread, in plan order.</summary>
public interface ITensorSink
{
    /// <summary>Stores the tensor (the caller disposes it afterwards).</summary>
    void Write(string name, torch.Tensor tensor);
}
