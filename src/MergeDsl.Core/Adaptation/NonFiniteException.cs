namespace MergeDsl.Core.Adaptation;

/// <summary>
/// Training produced NaN or Inf (in the objective or in a trained parameter); the run stops and nothing is written.
/// Typed so that callers need not match messages.
/// </summary>
public sealed class NonFiniteException(string message) : ArithmeticException(message);
