using System.Text;
using System.Text.RegularExpressions;

namespace MergeDsl.Core.Ir;

/// <summary>
/// A parameter-name pattern. <c>re:…</c> is a .NET regular expression that must match the whole
/// name; anything else is a glob where <c>*</c> matches any run of characters (dots included) and
/// <c>?</c> one character. A pattern without wildcards names exactly one parameter.
/// </summary>
public sealed record NamePattern
{
    readonly Regex regex;

    /// <summary>The pattern as written.</summary>
    public string Text { get; }

    /// <summary>True for <c>re:</c> patterns.</summary>
    public bool IsRegex { get; }

    /// <summary>True when the pattern can only match the one name it spells (no wildcard, not a regex).</summary>
    public bool IsLiteral => !IsRegex && Text.IndexOfAny(['*', '?']) < 0;

    NamePattern(string text)
    {
        Text = text;
        IsRegex = text.StartsWith("re:", StringComparison.Ordinal);
        string body = IsRegex ? text[3..] : GlobToRegex(text);
        try
        {
            regex = new Regex($"^(?:{body})$", RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new RecipeException($"pattern '{text}': invalid regular expression ({e.Message})");
        }
    }

    /// <summary>Parses a glob or <c>re:</c> pattern; throws <see cref="RecipeException"/> on a bad regex.</summary>
    public static NamePattern Parse(string text) => new(text);

    /// <summary>Whether the whole parameter name matches.</summary>
    public bool Matches(string name) => regex.IsMatch(name);

    static string GlobToRegex(string glob)
    {
        var sb = new StringBuilder();
        foreach (char c in glob)
        {
            sb.Append(c switch
            {
                '*' => ".*",
                '?' => ".",
                _ => Regex.Escape(c.ToString()),
            });
        }
        return sb.ToString();
    }

    /// <summary>Patterns are equal when their text is.</summary>
    public bool Equals(NamePattern? other) => other is not null && other.Text == Text;

    /// <inheritdoc />
    public override int GetHashCode() => Text.GetHashCode(StringComparison.Ordinal);

    /// <inheritdoc />
    public override string ToString() => Text;
}
