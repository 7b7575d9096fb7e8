using System.Globalization;
using System.Text;

namespace MergeDsl.Core.Json;

/// <summary>A parsed JSON value. Objects keep their members in order.</summary>
internal abstract record JsonNode
{
    public abstract string Kind { get; }
}

internal sealed record JsonObject(IReadOnlyList<KeyValuePair<string, JsonNode>> Members) : JsonNode
{
    public override string Kind => "an object";

    public JsonNode? this[string key]
    {
        get
        {
            foreach (var (k, v) in Members) if (k == key) return v;
            return null;
        }
    }
}

internal sealed record JsonArray(IReadOnlyList<JsonNode> Items) : JsonNode
{
    public override string Kind => "an array";
}

internal sealed record JsonString(string Value) : JsonNode
{
    public override string Kind => "a string";
}

/// <summary>A number, kept as its source text so integers of any size are judged exactly.</summary>
internal sealed record JsonNumber(string Text) : JsonNode
{
    public override string Kind => "a number";

    /// <summary>The value if the text is an integer that fits in a long.</summary>
    public bool TryGetInt64(out long value) =>
        long.TryParse(Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);

    /// <summary>True when the text has no fraction or exponent (an integer, possibly huge).</summary>
    public bool IsIntegerText => Text.All(c => c == '-' || char.IsAsciiDigit(c));
}

internal sealed record JsonBool(bool Value) : JsonNode
{
    public override string Kind => "a boolean";
}

internal sealed record JsonNull : JsonNode
{
    public override string Kind => "null";
}

/// <summary>Thrown by <see cref="StrictJson"/>; the message names the problem and its position.</summary>
internal sealed class JsonSyntaxException(string message) : Exception(message);

/// <summary>
/// A strict RFC 8259 parser. Unlike System.Text.Json's JsonDocument it rejects duplicate object keys,
/// which safetensors headers must not have (two tensors with one name).
/// </summary>
internal sealed class StrictJson
{
    const int MaxDepth = 64;
    readonly string _s;
    int _i;

    StrictJson(string s) => _s = s;

    /// <summary>Parses UTF-8 bytes; invalid UTF-8 is a syntax error.</summary>
    public static JsonNode Parse(ReadOnlySpan<byte> utf8)
    {
        string text;
        try
        {
            text = new UTF8Encoding(false, true).GetString(utf8);
        }
        catch (DecoderFallbackException)
        {
            throw new JsonSyntaxException("not valid UTF-8");
        }
        return Parse(text);
    }

    public static JsonNode Parse(string text)
    {
        var p = new StrictJson(text);
        p.SkipWhitespace();
        var v = p.Value(0);
        p.SkipWhitespace();
        if (p._i != p._s.Length) throw p.Error("unexpected text after the JSON value");
        return v;
    }

    JsonSyntaxException Error(string what) =>
        _i >= _s.Length ? new($"unexpected end of input ({what}) at character {_i}") : new($"{what} at character {_i}");

    void SkipWhitespace()
    {
        while (_i < _s.Length && _s[_i] is ' ' or '\t' or '\n' or '\r') _i++;
    }

    JsonNode Value(int depth)
    {
        if (depth > MaxDepth) throw Error("nesting deeper than 64 levels");
        if (_i >= _s.Length) throw Error("unexpected end of input");
        char c = _s[_i];
        switch (c)
        {
            case '{': return Object(depth);
            case '[': return Array(depth);
            case '"': return new JsonString(String());
            case 't': Literal("true"); return new JsonBool(true);
            case 'f': Literal("false"); return new JsonBool(false);
            case 'n': Literal("null"); return new JsonNull();
            default:
                if (c == '-' || char.IsAsciiDigit(c)) return Number();
                throw Error($"unexpected character '{Printable(c)}'");
        }
    }

    static string Printable(char c) => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString();

    void Literal(string word)
    {
        if (string.CompareOrdinal(_s, _i, word, 0, word.Length) != 0) throw Error("invalid literal");
        _i += word.Length;
    }

    JsonObject Object(int depth)
    {
        _i++; // '{'
        var members = new List<KeyValuePair<string, JsonNode>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        SkipWhitespace();
        if (_i < _s.Length && _s[_i] == '}') { _i++; return new JsonObject(members); }
        while (true)
        {
            SkipWhitespace();
            if (_i >= _s.Length || _s[_i] != '"') throw Error("expected a string key");
            int keyAt = _i;
            string key = String();
            if (!seen.Add(key))
            {
                _i = keyAt;
                throw new JsonSyntaxException($"duplicate key '{key}' at character {keyAt}");
            }
            SkipWhitespace();
            if (_i >= _s.Length || _s[_i] != ':') throw Error("expected ':'");
            _i++;
            SkipWhitespace();
            members.Add(new(key, Value(depth + 1)));
            SkipWhitespace();
            if (_i >= _s.Length) throw Error("unexpected end of input in an object");
            if (_s[_i] == ',') { _i++; continue; }
            if (_s[_i] == '}') { _i++; return new JsonObject(members); }
            throw Error("expected ',' or '}'");
        }
    }

    JsonArray Array(int depth)
    {
        _i++; // '['
        var items = new List<JsonNode>();
        SkipWhitespace();
        if (_i < _s.Length && _s[_i] == ']') { _i++; return new JsonArray(items); }
        while (true)
        {
            SkipWhitespace();
            items.Add(Value(depth + 1));
            SkipWhitespace();
            if (_i >= _s.Length) throw Error("unexpected end of input in an array");
            if (_s[_i] == ',') { _i++; continue; }
            if (_s[_i] == ']') { _i++; return new JsonArray(items); }
            throw Error("expected ',' or ']'");
        }
    }

    string String()
    {
        _i++; // opening quote
        var sb = new StringBuilder();
        while (true)
        {
            if (_i >= _s.Length) throw Error("unterminated string");
            char c = _s[_i++];
            if (c == '"') return sb.ToString();
            if (c < 0x20) { _i--; throw Error("control character in a string"); }
            if (c != '\\') { sb.Append(c); continue; }
            if (_i >= _s.Length) throw Error("unterminated escape");
            char e = _s[_i++];
            switch (e)
            {
                case '"': sb.Append('"'); break;
                case '\\': sb.Append('\\'); break;
                case '/': sb.Append('/'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'u':
                    if (_i + 4 > _s.Length || !int.TryParse(_s.AsSpan(_i, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code))
                        throw Error("invalid \\u escape");
                    _i += 4;
                    sb.Append((char)code);
                    break;
                default:
                    _i--;
                    throw Error($"invalid escape '\\{Printable(e)}'");
            }
        }
    }

    JsonNumber Number()
    {
        int start = _i;
        if (_s[_i] == '-') _i++;
        if (_i >= _s.Length || !char.IsAsciiDigit(_s[_i])) throw Error("invalid number");
        if (_s[_i] == '0') _i++;
        else while (_i < _s.Length && char.IsAsciiDigit(_s[_i])) _i++;
        if (_i < _s.Length && _s[_i] == '.')
        {
            _i++;
            if (_i >= _s.Length || !char.IsAsciiDigit(_s[_i])) throw Error("invalid number");
            while (_i < _s.Length && char.IsAsciiDigit(_s[_i])) _i++;
        }
        if (_i < _s.Length && _s[_i] is 'e' or 'E')
        {
            _i++;
            if (_i < _s.Length && _s[_i] is '+' or '-') _i++;
            if (_i >= _s.Length || !char.IsAsciiDigit(_s[_i])) throw Error("invalid number");
            while (_i < _s.Length && char.IsAsciiDigit(_s[_i])) _i++;
        }
        return new JsonNumber(_s[start.._i]);
    }
}
