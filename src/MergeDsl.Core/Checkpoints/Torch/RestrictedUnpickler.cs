using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace MergeDsl.Core.Checkpoints.Torch;

/// <summary>
/// A pickle reader for PyTorch checkpoints that runs no code. It knows the opcodes of protocols 0–5 and builds
/// plain values (None, bools, ints, floats, strings, bytes, tuples, lists, dicts); the only globals it resolves
/// are <c>collections.OrderedDict</c>, the tensor rebuild functions of <c>torch._utils</c> and the
/// <c>torch.*Storage</c> types, and "calling" one of them builds a value, nothing else. Any other global
/// (<c>posix.system</c>, <c>builtins.eval</c>, ...) stops the read with one line naming it.
/// </summary>
internal sealed class RestrictedUnpickler
{
    /// <summary>The storage types and their dtypes.</summary>
    internal static readonly IReadOnlyDictionary<string, DType> StorageTypes = new Dictionary<string, DType>(StringComparer.Ordinal)
    {
        ["FloatStorage"] = DType.F32, ["DoubleStorage"] = DType.F64, ["HalfStorage"] = DType.F16,
        ["BFloat16Storage"] = DType.BF16, ["LongStorage"] = DType.I64, ["IntStorage"] = DType.I32,
        ["ShortStorage"] = DType.I16, ["CharStorage"] = DType.I8, ["ByteStorage"] = DType.U8, ["BoolStorage"] = DType.Bool,
    };

    static readonly HashSet<string> Allowed = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter",
    };

    const int MaxStack = 1 << 20;
    const int MaxMemo = 1 << 24;

    readonly Stream _in;
    readonly string _file;
    readonly Func<object?, object?> _persistentLoad;
    readonly List<object?> _stack = new();
    readonly Stack<int> _marks = new();
    readonly Dictionary<long, object?> _memo = new();

    RestrictedUnpickler(Stream input, string file, Func<object?, object?> persistentLoad)
    {
        _in = input;
        _file = file;
        _persistentLoad = persistentLoad;
    }

    /// <summary>
    /// Reads one pickle from <paramref name="input"/>, leaving it just past the STOP opcode.
    /// <paramref name="persistentLoad"/> turns a persistent id (PyTorch's storage tuple) into a value.
    /// </summary>
    /// <exception cref="CheckpointFormatException">A refused global, an unknown opcode, or malformed data (one line naming <paramref name="file"/>).</exception>
    public static object? Load(Stream input, string file, Func<object?, object?> persistentLoad) =>
        new RestrictedUnpickler(input, file, persistentLoad).Run();

    CheckpointFormatException Bad(string problem) => new(_file, $"pickle at byte {_in.Position}: {problem}");

    object? Run()
    {
        while (true)
        {
            int op = _in.ReadByte();
            if (op < 0) throw Bad("ended before its STOP opcode");
            switch (op)
            {
                case 0x80: ReadByte(); break; // PROTO
                case 0x95: ReadBytes(8); break; // FRAME: a length hint only
                case '.': return Pop(); // STOP
                case '(': _marks.Push(_stack.Count); break;
                case '0': Pop(); break;
                case '1': PopMark(); break;
                case '2': Push(Peek()); break;
                case 'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case 'I': Push(ParseIntLine(Line())); break;
                case 'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break;
                case 'K': Push((long)ReadByte()); break;
                case 'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break;
                case 'L': Push(Narrow(BigInteger.Parse(Line().TrimEnd('L'), CultureInfo.InvariantCulture))); break;
                case 0x8a: Push(Narrow(new BigInteger(ReadBytes(ReadByte()), isUnsigned: false, isBigEndian: false))); break;
                case 0x8b: Push(Narrow(new BigInteger(ReadBytes(Length(BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4)))), isUnsigned: false, isBigEndian: false))); break;
                case 'F': Push(double.Parse(Line(), CultureInfo.InvariantCulture)); break;
                case 'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break;
                case 'S': Push(UnquoteAscii(Line())); break;
                case 'T': Push(Encoding.Latin1.GetString(ReadBytes(Length(BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4)))))); break;
                case 'U': Push(Encoding.Latin1.GetString(ReadBytes(ReadByte()))); break;
                case 'V': Push(Line()); break;
                case 'X': Push(Utf8(ReadBytes(Length(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))))); break;
                case 0x8c: Push(Utf8(ReadBytes(ReadByte()))); break;
                case 0x8d: Push(Utf8(ReadBytes(Length(BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8)))))); break;
                case 'B': Push(ReadBytes(Length(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))))); break;
                case 'C': Push(ReadBytes(ReadByte())); break;
                case 0x8e: Push(ReadBytes(Length(BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8))))); break;
                case ']': Push(new List<object?>()); break;
                case 'l': Push(new List<object?>(PopMark())); break;
                case 'a': { var v = Pop(); AsList(Peek()).Add(v); break; }
                case 'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                case ')': Push(new PickleTuple([])); break;
                case 't': Push(new PickleTuple(PopMark().ToArray())); break;
                case 0x85: Push(new PickleTuple([Pop()])); break;
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PickleTuple([a, b])); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PickleTuple([a, b, c])); break; }
                case '}': Push(new PickleDict()); break;
                case 'd': { var d = new PickleDict(); AddPairs(d, PopMark()); Push(d); break; }
                case 's': { var v = Pop(); var k = Pop(); AsDict(Peek()).Items.Add(new(k, v)); break; }
                case 'u': { var items = PopMark(); AddPairs(AsDict(Peek()), items); break; }
                case 'c': Push(Global(Line(), Line())); break;
                case 0x93:
                {
                    var name = Pop();
                    var module = Pop();
                    if (module is not string m || name is not string n) throw Bad("STACK_GLOBAL needs two strings");
                    Push(Global(m, n));
                    break;
                }
                case 'i': throw Refused(Line() + "." + Line());
                case 'o': { var items = PopMark(); if (items.Count == 0) throw Bad("OBJ without a class"); Push(Call(items[0], new PickleTuple(items.Skip(1).ToArray()))); break; }
                case 'R': { var args = Pop(); var f = Pop(); Push(Call(f, args)); break; }
                case 0x81: { var args = Pop(); var cls = Pop(); Push(Call(cls, args)); break; }
                case 'b': { var state = Pop(); Build(Peek(), state); break; }
                case 'p': _memo[ParseLong(Line())] = Peek(); CheckMemo(); break;
                case 'q': _memo[ReadByte()] = Peek(); CheckMemo(); break;
                case 'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))] = Peek(); CheckMemo(); break;
                case 0x94: _memo[_memo.Count] = Peek(); CheckMemo(); break;
                case 'g': Push(Memo(ParseLong(Line()))); break;
                case 'h': Push(Memo(ReadByte())); break;
                case 'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))); break;
                case 'P': Push(_persistentLoad(Line())); break;
                case 'Q': Push(_persistentLoad(Pop())); break;
                default: throw Bad($"opcode 0x{op:x2} is not supported (sets, extension registry, out-of-band buffers and NEWOBJ_EX are never needed by a checkpoint)");
            }
        }
    }

    CheckpointFormatException Refused(string global) =>
        new(_file, $"pickle refers to the global '{Text.TerminalText.Sanitize(global)}', which is not allowed (only tensors, storages and OrderedDict are rebuilt; no code from a checkpoint is run)");

    object Global(string module, string name)
    {
        string full = module + "." + name;
        if (Allowed.Contains(full) || (module == "torch" && StorageTypes.ContainsKey(name))) return new PickleGlobal(module, name);
        throw Refused(full);
    }

    object? Call(object? callable, object? args)
    {
        if (callable is not PickleGlobal g) throw Bad($"call of a {TypeName(callable)} (only allowed globals can be called)");
        if (args is not PickleTuple t) throw Bad($"{g}: arguments are a {TypeName(args)}, not a tuple");
        var a = t.Items;
        switch (g.ToString())
        {
            case "collections.OrderedDict":
            {
                var d = new PickleDict();
                if (a.Length == 1 && a[0] is List<object?> pairs)
                    foreach (var p in pairs)
                        d.Items.Add(p is PickleTuple { Items.Length: 2 } kv ? new(kv.Items[0], kv.Items[1]) : throw Bad("OrderedDict items must be pairs"));
                else if (a.Length != 0) throw Bad("OrderedDict takes no arguments or a list of pairs");
                return d;
            }
            case "torch._utils._rebuild_tensor_v2" when a.Length is 6 or 7:
            case "torch._utils._rebuild_tensor" when a.Length == 4:
                return Tensor(g, a);
            case "torch._utils._rebuild_parameter" when a.Length is 3:
                return a[0] is TorchTensorRef data ? data : throw Bad($"{g}: data is a {TypeName(a[0])}, not a tensor");
            default:
                throw Bad($"{g} called with {a.Length} argument(s), which this reader does not accept");
        }
    }

    TorchTensorRef Tensor(PickleGlobal g, object?[] a)
    {
        if (a[0] is not TorchStorage s) throw Bad($"{g}: storage argument is a {TypeName(a[0])}");
        long offset = a[1] is long o ? o : throw Bad($"{g}: storage offset is not an integer");
        long[] Ints(object? v, string what) => v is PickleTuple t
            ? t.Items.Select(x => x is long l ? l : throw Bad($"{g}: {what} holds a {TypeName(x)}")).ToArray()
            : throw Bad($"{g}: {what} is not a tuple");
        var size = Ints(a[2], "size");
        var stride = Ints(a[3], "stride");
        if (size.Length != stride.Length) throw Bad($"{g}: size has {size.Length} dimensions, stride {stride.Length}");
        if (offset < 0 || size.Any(x => x < 0) || stride.Any(x => x < 0)) throw Bad($"{g}: negative offset, size or stride");
        // The highest element the view touches must lie in the storage (an empty view touches none).
        if (!size.Contains(0))
        {
            BigInteger last = offset;
            for (int i = 0; i < size.Length; i++) last += (BigInteger)(size[i] - 1) * stride[i];
            if (last >= s.Numel)
                throw Bad($"{g}: a tensor of size ({string.Join(", ", size)}) stride ({string.Join(", ", stride)}) offset {offset} reaches element {last} of a storage of {s.Numel}");
        }
        return new TorchTensorRef(s, offset, size, stride);
    }

    void Build(object? target, object? state)
    {
        // An OrderedDict's instance attributes (a state_dict's `_metadata`) carry nothing a tensor needs.
        if (target is PickleDict && state is PickleDict or PickleTuple or null) return;
        throw Bad($"BUILD on a {TypeName(target)} is not allowed");
    }

    void AddPairs(PickleDict d, List<object?> items)
    {
        if (items.Count % 2 != 0) throw Bad("odd number of items for a dict");
        for (int i = 0; i < items.Count; i += 2) d.Items.Add(new(items[i], items[i + 1]));
    }

    static string TypeName(object? v) => v switch
    {
        null => "None", long or BigInteger => "int", string => "str", byte[] => "bytes", double => "float", bool => "bool",
        PickleTuple => "tuple", List<object?> => "list", PickleDict => "dict", PickleGlobal g => g.ToString(),
        TorchStorage => "storage", TorchTensorRef => "tensor", _ => v.GetType().Name,
    };

    List<object?> AsList(object? v) => v as List<object?> ?? throw Bad($"append to a {TypeName(v)}");
    PickleDict AsDict(object? v) => v as PickleDict ?? throw Bad($"set item of a {TypeName(v)}");

    void Push(object? v)
    {
        if (_stack.Count >= MaxStack) throw Bad("stack too deep");
        _stack.Add(v);
    }

    object? Pop()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count <= _marks.Peek())) throw Bad("stack underflow");
        var v = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return v;
    }

    object? Peek() => _stack.Count == 0 ? throw Bad("stack underflow") : _stack[^1];

    List<object?> PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK on the stack");
        int at = _marks.Pop();
        var items = _stack.GetRange(at, _stack.Count - at);
        _stack.RemoveRange(at, _stack.Count - at);
        return items;
    }

    void CheckMemo()
    {
        if (_memo.Count > MaxMemo) throw Bad("memo too large");
    }

    object? Memo(long key) => _memo.TryGetValue(key, out var v) ? v : throw Bad($"memo key {key} was never stored");

    int ReadByte()
    {
        int b = _in.ReadByte();
        return b < 0 ? throw Bad("ended inside an opcode") : b;
    }

    int Length(long n)
    {
        if (n < 0 || n > _in.Length - _in.Position) throw Bad($"length {n} runs past the end of the data");
        return (int)n;
    }

    int Length(ulong n) => n > int.MaxValue ? throw Bad($"length {n} runs past the end of the data") : Length((long)n);

    byte[] ReadBytes(int n)
    {
        Length(n);
        var b = new byte[n];
        _in.ReadExactly(b);
        return b;
    }

    string Line()
    {
        var sb = new StringBuilder();
        while (true)
        {
            int b = ReadByte();
            if (b == '\n') return sb.ToString();
            if (sb.Length > 4096) throw Bad("text line longer than 4096 bytes");
            sb.Append((char)b);
        }
    }

    string Utf8(byte[] b)
    {
        try { return new UTF8Encoding(false, true).GetString(b); }
        catch (DecoderFallbackException) { throw Bad("string is not valid UTF-8"); }
    }

    object ParseIntLine(string s) => s switch
    {
        "00" => false,
        "01" => true,
        _ => ParseLong(s),
    };

    long ParseLong(string s) =>
        long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v) ? v : throw Bad($"'{Text.TerminalText.Sanitize(s)}' is not an integer");

    static object Narrow(BigInteger v) => v >= long.MinValue && v <= long.MaxValue ? (long)v : v;

    string UnquoteAscii(string s) =>
        s.Length >= 2 && (s[0] == '\'' || s[0] == '"') && s[^1] == s[0] ? s[1..^1] : throw Bad("STRING is not quoted");
}
