using MergeDsl.Bench.Data;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>What a row of the text pool builds its model from.</summary>
/// <param name="BaseFolder">The pretrained model (a Hugging Face folder).</param>
/// <param name="ExpertFolders">One fine-tuned expert per held-in domain, in <paramref name="ExpertDomains"/> order.</param>
/// <param name="ExpertDomains">The held-in domains' names.</param>
/// <param name="Data">Every domain's splits by name. A method may adapt on unlabelled validation or test text
/// (test-time adaptation reads no next-byte targets it is scored on beyond the text itself), but chooses its
/// hyper-parameters only through <see cref="ITextRowProducer.Grid"/>, which the pool scores on validation text.</param>
/// <param name="Seed">The run's seed (zoo and method seed).</param>
public sealed record TextRowInputs(string BaseFolder, IReadOnlyList<string> ExpertFolders, IReadOnlyList<string> ExpertDomains,
    IReadOnlyDictionary<string, TextSplits> Data, int Seed);

/// <summary>
/// One row of the text pool: a merging method that turns the base and the experts into one model the pool
/// scores on every domain. The pool builds the model for every setting of <see cref="Grid"/>, keeps the one with
/// the lowest mean bits per byte on the held-in domains' validation text, and reports that one on test text.
/// Dynamic merges (WEMoE, SMILE, AdaMerging on decoder MLPs) plug in as one producer each.
/// </summary>
public interface ITextRowProducer
{
    /// <summary>The row's name in the table.</summary>
    string Method { get; }

    /// <summary>Hyper-parameter settings to choose among (one empty setting when there is no choice).</summary>
    IReadOnlyList<IReadOnlyDictionary<string, string>> Grid { get; }

    /// <summary>Settings that are fixed rather than chosen (reported with the row).</summary>
    IReadOnlyDictionary<string, string> Fixed { get; }

    /// <summary>Builds the model for one setting; the caller disposes it.</summary>
    DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting);

    /// <summary>
    /// Called before <paramref name="model"/> (built by this producer) is scored on <paramref name="domain"/>'s text,
    /// validation or test. Rows whose model depends on the domain (oracle routing) set it up here; the default does nothing.
    /// </summary>
    void ForDomain(DecoderModel model, TextRowInputs inputs, string domain) { }
}
