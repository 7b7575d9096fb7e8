namespace MergeDsl.Core.Models.Decoder;

/// <summary>How <see cref="DecoderGeneration"/> picks tokens.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to add after the prompt (fewer when <see cref="StopAtEos"/> ends early).</summary>
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>0: greedy (argmax); above 0: sample from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }
    /// <summary>When sampling, keep only the K most likely tokens (0: all).</summary>
    public int TopK { get; init; }
    /// <summary>Seed of the sampler's generator: the same seed gives the same tokens.</summary>
    public long Seed { get; init; } = 1;
    /// <summary>Stop after emitting this id (normally the tokenizer's or config's EOS), if given.</summary>
    public int? StopAtEos { get; init; }
    /// <summary>Reuse keys and values of earlier tokens (one model pass over one position per new token); false recomputes the whole sequence each step.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Keep each step's logits in the result (for checks; costs vocab floats per token).</summary>
    public bool KeepLogits { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming a bad field.</summary>
    public GenerationOptions Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max new tokens must be 0 or more, got {MaxNewTokens}");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be a finite number ≥ 0, got {Temperature}");
        if (TopK < 0) throw new ArgumentException($"top-k must be 0 (off) or positive, got {TopK}");
        return this;
    }
}

/// <summary>The tokens a generation added, and optionally the logits each was chosen from.</summary>
/// <param name="Tokens">The generated token ids, in order.</param>
/// <param name="StepLogits">The logits each token was chosen from, when requested; otherwise null.</param>
public sealed record GenerationResult(IReadOnlyList<int> Tokens, IReadOnlyList<float[]>? StepLogits);
