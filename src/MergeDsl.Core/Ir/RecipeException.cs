namespace MergeDsl.Core.Ir;

/// <summary>
/// A recipe that cannot be compiled or run against the given inputs. The message is one line and
/// names the parameter and model concerned, e.g. <c>model.layers.0.mlp.w: shape [4, 8] in expert 'b' differs from [4, 4] in base 'a'</c>.
/// </summary>
public sealed class RecipeException : Exception
{
    /// <summary>The parameter concerned, when there is one.</summary>
    public string? Parameter { get; }

    /// <summary>Creates the exception with a one-line message.</summary>
    public RecipeException(string message) : base(message) { }

    /// <summary>Creates the exception for a parameter; the message is prefixed with the name.</summary>
    public RecipeException(string parameter, string problem) : base($"{parameter}: {problem}") => Parameter = parameter;
}
