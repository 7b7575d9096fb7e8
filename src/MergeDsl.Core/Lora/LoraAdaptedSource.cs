using MergeDsl.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Lora;

/// <summary>
/// A model with a LoRA adapter applied, served tensor by tensor: W' = W + scale·B·A for every adapted weight
/// (computed in float64, returned in W's dtype), every other tensor as the model has it. Names, shapes and
/// dtypes are the model's, so a merge compiles against it as against the model. Owns both inputs.
/// </summary>
public sealed class LoraAdaptedSource : ITensorSource, ICheckpointBacked
{
    readonly Checkpoint _model;
    readonly LoraAdapter _adapter;

    /// <summary>Checks that every adapted module's weight exists in the model with the adapter's shape.</summary>
    /// <exception cref="CheckpointFormatException">An adapter module the model lacks, or a shape that does not fit (one line).</exception>
    public LoraAdaptedSource(Checkpoint model, LoraAdapter adapter)
    {
        foreach (var m in adapter.Modules)
        {
            string shown = Text.TerminalText.Sanitize(m.Module);
            if (!model.TryGetInfo(m.Weight, out var w))
                throw new CheckpointFormatException(adapter.Folder, $"adapts module '{shown}', but {model.Path} has no tensor '{Text.TerminalText.Sanitize(m.Weight)}'");
            adapter.Weights.TryGetInfo(m.A, out var a);
            adapter.Weights.TryGetInfo(m.B, out var b);
            long[] expected = m.FanInFanOut ? [a!.Shape[1], b!.Shape[0]] : [b!.Shape[0], a!.Shape[1]];
            if (!DTypes.IsFloatingPoint(w.DType) || !w.Shape.SequenceEqual(expected))
                throw new CheckpointFormatException(adapter.Folder,
                    $"module '{shown}': B·A is [{string.Join(", ", expected)}] but the model's weight is {w.DType} {w.ShapeText}");
        }
        _model = model;
        _adapter = adapter;
        Label = model.Path + "+" + adapter.Folder;
    }

    /// <summary>The adapter applied.</summary>
    public LoraAdapter Adapter => _adapter;

    /// <inheritdoc/>
    public string Label { get; }

    /// <inheritdoc/>
    public IReadOnlyList<TensorInfo> Tensors => _model.Tensors;

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata => _model.Metadata;

    /// <inheritdoc/>
    public IReadOnlyList<Checkpoint> Checkpoints => [_model, _adapter.Weights];

    /// <inheritdoc/>
    public bool TryGetInfo(string name, out TensorInfo info) => _model.TryGetInfo(name, out info);

    /// <inheritdoc/>
    public Tensor Load(string name)
    {
        var w = _model.Load(name);
        if (!_adapter.TryGetModule(name, out var module)) return w;
        using var scope = NewDisposeScope();
        using (w)
        {
            using var delta = _adapter.Delta(module);
            return w.to_type(ScalarType.Float64).add(delta).to_type(w.dtype).MoveToOuterDisposeScope();
        }
    }

    /// <summary>Closes the model and the adapter.</summary>
    public void Dispose()
    {
        _model.Dispose();
        _adapter.Dispose();
    }
}
