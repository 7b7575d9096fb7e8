using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models;

/// <summary>Copies named source tensors into a model's parameters, as every runtime (CLIP, decoder) loads weights.</summary>
internal static class NamedWeights
{
    /// <summary>
    /// Copies <paramref name="load"/>(name) into each of <paramref name="own"/>'s parameters (any floating dtype,
    /// converted). Every parameter must be offered with its shape, else <see cref="ModelWeightsException"/> names the
    /// missing and mis-shaped ones before anything is copied. Returns the offered names the model does not use.
    /// </summary>
    public static IReadOnlyList<string> CopyInto(IReadOnlyDictionary<string, Parameter> own, IEnumerable<string> names,
        Func<string, long[]?> shapeOf, Func<string, Tensor> load, string label)
    {
        var missing = new List<string>();
        var misShaped = new List<string>();
        foreach (var (name, p) in own)
        {
            var shape = shapeOf(name);
            if (shape is null) missing.Add(name);
            else if (!shape.SequenceEqual(p.shape))
                misShaped.Add($"{name} [{string.Join(",", shape)}] (model expects [{string.Join(",", p.shape)}])");
        }
        if (missing.Count > 0 || misShaped.Count > 0) throw new ModelWeightsException(label, missing, misShaped);
        using (no_grad())
        {
            foreach (var (name, p) in own)
            {
                using var src = load(name);
                if (!src.is_floating_point())
                    throw new ModelWeightsException(label, [], [$"{name} has dtype {src.dtype}, expected a floating type"]);
                p.copy_(src);
            }
        }
        return names.Where(n => !own.ContainsKey(n)).ToList();
    }
}
