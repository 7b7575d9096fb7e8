using System.Text;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder.Tokenizers;

namespace MergeDsl.Core.Adaptation;

/// <summary>One task's unlabelled text for test-time adaptation of a language model: its token stream.</summary>
/// <param name="Task">Task (domain) name.</param>
/// <param name="Tokens">The text's token ids (no BOS/EOS); adaptation draws windows from it.</param>
/// <param name="Bytes">UTF-8 bytes of the text (for bits per byte).</param>
/// <param name="Source">Where it came from (a file, or a label), for messages.</param>
public sealed record TextTaskData(string Task, IReadOnlyList<int> Tokens, long Bytes, string Source)
{
    /// <summary>Tokenizes <paramref name="text"/> for <paramref name="task"/>.</summary>
    public static TextTaskData FromText(string task, string text, ITextTokenizer tokenizer, string? source = null)
        => new(task, tokenizer.Encode(text), Encoding.UTF8.GetByteCount(text), source ?? task);
}

/// <summary>A folder of per-task texts: <c>&lt;task&gt;.txt</c> (UTF-8), read through <see cref="ModelFiles"/>.</summary>
public static class TextDataFolder
{
    /// <summary>Largest text file read (64 MiB).</summary>
    public const long MaxTextBytes = 64L << 20;

    /// <summary>Task names (file names without <c>.txt</c>), sorted ordinally.</summary>
    public static IReadOnlyList<string> Tasks(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such folder");
        return Directory.GetFiles(folder, "*.txt").Select(Path.GetFileNameWithoutExtension).OfType<string>()
            .OrderBy(t => t, StringComparer.Ordinal).ToList();
    }

    /// <summary>Reads and tokenizes every task's text; one-line errors name a file that is not UTF-8 or is empty.</summary>
    public static IReadOnlyList<TextTaskData> Load(string folder, ITextTokenizer tokenizer)
    {
        var tasks = Tasks(folder);
        if (tasks.Count == 0) throw new ArgumentException($"{folder}: no <task>.txt files");
        var strict = new UTF8Encoding(false, true);
        return tasks.Select(task =>
        {
            string file = Path.Combine(folder, task + ".txt");
            var bytes = ModelFiles.ReadAll(file, MaxTextBytes, folder);
            string text;
            try { text = strict.GetString(bytes); }
            catch (DecoderFallbackException e) { throw new ArgumentException($"{file}: not UTF-8 text ({e.Message})"); }
            if (text.Length == 0) throw new ArgumentException($"{file}: the text is empty");
            return TextTaskData.FromText(task, text, tokenizer, file);
        }).ToList();
    }
}
