using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace MergeDsl.Bench.Streaming;

/// <summary>What a synthetic model zoo for the streaming benchmark looks like.</summary>
/// <param name="ModelBytes">Approximate size of each model's tensor data in bytes.</param>
/// <param name="Experts">How many fine-tuned experts accompany the base.</param>
/// <param name="Columns">Width of each weight matrix (4096 by default, like a 7B model's hidden size).</param>
/// <param name="MaxRows">Height of a full weight matrix; the last one is shorter to hit the size.</param>
public sealed record SyntheticZooSpec(long ModelBytes, int Experts, int Columns = 4096, int MaxRows = 4096)
{
    /// <summary>The weight matrices' shapes, in file order: full ones, then one shorter remainder.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> Layout()
    {
        if (ModelBytes < Columns * 4L) throw new ArgumentException($"--size: {ModelBytes} bytes is smaller than one row of {Columns} f32 values");
        if (Experts < 1) throw new ArgumentException($"--experts: need at least 1 expert, got {Experts}");
        long rowsTotal = ModelBytes / (Columns * 4L);
        var layout = new List<(string, long[])>();
        int layer = 0;
        while (rowsTotal > 0)
        {
            long rows = Math.Min(rowsTotal, MaxRows);
            layout.Add(($"layers.{layer}.weight", new[] { rows, (long)Columns }));
            layout.Add(($"layers.{layer}.bias", new[] { (long)Columns }));
            rowsTotal -= rows;
            layer++;
        }
        return layout;
    }
}

/// <summary>The folders of a generated zoo.</summary>
/// <param name="Base">The base model's folder.</param>
/// <param name="Experts">The experts' folders.</param>
/// <param name="Reused">True when an existing, matching zoo was found and nothing was written.</param>
public sealed record SyntheticZoo(string Base, IReadOnlyList<string> Experts, bool Reused)
{
    /// <summary>Every safetensors file of the zoo, base first.</summary>
    public IReadOnlyList<string> Files() =>
        new[] { Base }.Concat(Experts).Select(d => Path.Combine(d, "model.safetensors")).ToList();
}

/// <summary>
/// Writes deterministic f32 checkpoints (a base and experts = base + small dense noise) for the
/// streaming benchmark, straight to disk without holding a whole tensor in memory. A zoo that already
/// exists with the same spec is reused, so repeated runs do not rewrite gigabytes.
/// </summary>
public static class SyntheticCheckpoints
{
    const string ManifestName = "mergedsl-bench-zoo.json";
    const int ChunkFloats = 1 << 20;

    /// <summary>Creates (or reuses) the zoo under <paramref name="directory"/>.</summary>
    public static SyntheticZoo Ensure(string directory, SyntheticZooSpec spec, Action<string>? log = null)
    {
        string baseDir = Path.Combine(directory, "base");
        var experts = Enumerable.Range(1, spec.Experts).Select(i => Path.Combine(directory, $"expert-{i}")).ToList();
        string manifest = Path.Combine(directory, ManifestName);
        string wanted = JsonSerializer.Serialize(spec);
        bool complete = File.Exists(manifest) && File.ReadAllText(manifest) == wanted
            && new[] { baseDir }.Concat(experts).All(d => File.Exists(Path.Combine(d, "model.safetensors")));
        if (complete) return new SyntheticZoo(baseDir, experts, true);

        Directory.CreateDirectory(directory);
        if (File.Exists(manifest)) File.Delete(manifest);
        var layout = spec.Layout();
        log?.Invoke($"writing base model ({layout.Count} tensors) to {baseDir}");
        WriteModel(baseDir, layout, expert: 0);
        for (int i = 0; i < experts.Count; i++)
        {
            log?.Invoke($"writing expert {i + 1}/{experts.Count} to {experts[i]}");
            WriteModel(experts[i], layout, expert: i + 1);
        }
        File.WriteAllText(manifest, wanted);
        return new SyntheticZoo(baseDir, experts, false);
    }

    /// <summary>Writes one model: expert 0 is the base; expert k adds noise seeded by k.</summary>
    public static void WriteModel(string folder, IReadOnlyList<(string Name, long[] Shape)> layout, int expert)
    {
        Directory.CreateDirectory(folder);
        string file = Path.Combine(folder, "model.safetensors");
        string tmp = file + ".tmp";
        byte[] header = Header(layout);
        var floats = new float[ChunkFloats];
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header);
            for (int t = 0; t < layout.Count; t++)
            {
                long count = layout[t].Shape.Aggregate(1L, (a, b) => a * b);
                for (long start = 0, chunk = 0; start < count; start += ChunkFloats, chunk++)
                {
                    int n = (int)Math.Min(ChunkFloats, count - start);
                    Fill(floats.AsSpan(0, n), t, chunk, expert);
                    stream.Write(MemoryMarshal.AsBytes(floats.AsSpan(0, n)));
                }
            }
        }
        File.Move(tmp, file, overwrite: true);
        File.WriteAllText(Path.Combine(folder, "config.json"),
            "{\"model_type\": \"mergedsl-synthetic\", \"torch_dtype\": \"float32\"}\n");
    }

    // Base values ~ U(-0.05, 0.05); an expert adds U(-0.005, 0.005), so task vectors are dense, small
    // and disagree in sign between experts (which is what TIES has to resolve).
    static void Fill(Span<float> values, int tensor, long chunk, int expert)
    {
        ulong s = Seed(tensor, chunk, 0);
        for (int i = 0; i < values.Length; i++) values[i] = 0.1f * (Next(ref s) - 0.5f);
        if (expert == 0) return;
        ulong e = Seed(tensor, chunk, expert);
        for (int i = 0; i < values.Length; i++) values[i] += 0.01f * (Next(ref e) - 0.5f);
    }

    static ulong Seed(int tensor, long chunk, int expert)
    {
        ulong x = 0x9E3779B97F4A7C15UL ^ ((ulong)tensor * 0xBF58476D1CE4E5B9UL) ^ ((ulong)chunk << 20) ^ ((ulong)expert * 0x94D049BB133111EBUL);
        return x == 0 ? 1 : x;
    }

    // xorshift64*: fast, good enough for benchmark data; 24 high bits make a float in [0, 1).
    static float Next(ref ulong s)
    {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        return ((s * 0x2545F4914F6CDD1DUL) >> 40) * (1.0f / (1 << 24));
    }

    static byte[] Header(IReadOnlyList<(string Name, long[] Shape)> layout)
    {
        var sb = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"mergedsl bench\"}");
        long offset = 0;
        foreach (var (name, shape) in layout)
        {
            long bytes = shape.Aggregate(4L, (a, b) => a * b);
            sb.Append(CultureInfo.InvariantCulture,
                $",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{offset},{offset + bytes}]}}");
            offset += bytes;
        }
        sb.Append('}');
        // Pad with spaces so tensor data starts 8-byte aligned (memory-mapped f32/f64 views want that).
        while ((sb.Length + 8) % 8 != 0) sb.Append(' ');
        return Encoding.UTF8.GetBytes(sb.ToString());
    }
}
