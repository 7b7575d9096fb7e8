namespace MergeDsl.Core.Execution;

/// <summary>
/// A NaN or ±Inf in an input tensor (<see cref="Model"/> names the model) or in a merged tensor
/// (<see cref="Model"/> is null), found while <see cref="MergeOptions.AllowNonFinite"/> is false.
/// The message is one line naming the tensor and, for an input, the model.
/// </summary>
public sealed class NonFiniteTensorException : Exception
{
    /// <summary>The parameter (tensor name).</summary>
    public string Tensor { get; }

    /// <summary>Label of the input model holding the values; null when the merged result holds them.</summary>
    public string? Model { get; }

    /// <summary>How many entries are NaN or ±Inf.</summary>
    public long Count { get; }

    /// <summary>Flat index of the first such entry.</summary>
    public long FirstIndex { get; }

    /// <summary>Creates the exception; <paramref name="model"/> null means the merged output.</summary>
    public NonFiniteTensorException(string tensor, string? model, long count, long firstIndex)
        : base($"{tensor}: {(model is null ? "the merged tensor" : $"input model '{model}'")} has {count} NaN/Inf value{(count == 1 ? "" : "s")} (first at flat index {firstIndex})")
    {
        Tensor = tensor;
        Model = model;
        Count = count;
        FirstIndex = firstIndex;
    }
}
