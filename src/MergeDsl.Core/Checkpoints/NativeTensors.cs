using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Builds TorchSharp tensors over foreign memory through libLibTorchSharp's <c>THSTensor_new</c>
/// (TorchSharp's public factories always copy). The deleter libtorch calls when the storage dies
/// releases the mapped shard the tensor views.
/// </summary>
internal static unsafe class NativeTensors
{
    // THSTensor_new(void* data, void (*deleter)(void*), const int64_t* sizes, int ndims,
    //               int8_t scalar_type, int8_t dtype, int device_type, int device_index, bool requires_grad)
    static readonly delegate* unmanaged[Cdecl]<IntPtr, delegate* unmanaged[Cdecl]<IntPtr, void>, long*, int, sbyte, sbyte, int, int, byte, IntPtr> NewTensor;
    static readonly delegate* unmanaged[Cdecl]<IntPtr, IntPtr> TensorData;
    static readonly string? LoadError;

    static readonly object Gate = new();
    // Keyed by data pointer: the deleter only receives the pointer. Loading one tensor twice gives two
    // storages over the same address, hence the count.
    static readonly Dictionary<IntPtr, (MappedShard Shard, int Count)> Live = new();

    static NativeTensors()
    {
        try
        {
            using (torch.empty(0)) { } // makes TorchSharp load libtorch and its glue first
            if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out var lib))
            {
                LoadError = "libLibTorchSharp could not be loaded";
                return;
            }
            NewTensor = (delegate* unmanaged[Cdecl]<IntPtr, delegate* unmanaged[Cdecl]<IntPtr, void>, long*, int, sbyte, sbyte, int, int, byte, IntPtr>)
                NativeLibrary.GetExport(lib, "THSTensor_new");
            TensorData = (delegate* unmanaged[Cdecl]<IntPtr, IntPtr>)NativeLibrary.GetExport(lib, "THSTensor_data");
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException or BadImageFormatException)
        {
            LoadError = e.Message;
        }
    }

    /// <summary>True when zero-copy views can be made in this process.</summary>
    public static bool Available => LoadError is null;

    /// <summary>Address of a contiguous CPU tensor's first element.</summary>
    public static IntPtr DataPointer(torch.Tensor t)
    {
        if (LoadError is not null) throw new InvalidOperationException(LoadError);
        return TensorData(t.Handle);
    }

    /// <summary>
    /// A tensor viewing <paramref name="data"/> without a copy, or null when that is not possible
    /// (misaligned data, native entry point missing). The shard gains a reference until libtorch frees
    /// the storage.
    /// </summary>
    public static torch.Tensor? TryView(MappedShard shard, byte* data, long[] shape, torch.ScalarType type, int elementSize)
    {
        if (LoadError is not null || (nuint)data % (nuint)elementSize != 0) return null;
        var key = (IntPtr)data;
        lock (Gate)
        {
            shard.AddRef();
            Live[key] = Live.TryGetValue(key, out var entry) ? (shard, entry.Count + 1) : (shard, 1);
        }
        IntPtr handle;
        fixed (long* sizes = shape)
        {
            handle = NewTensor(key, &OnStorageFreed, sizes, shape.Length, (sbyte)type, (sbyte)type, (int)DeviceType.CPU, -1, 0);
        }
        if (handle == IntPtr.Zero)
        {
            ReleaseView(key);
            return null;
        }
        return torch.Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>Copies <paramref name="byteCount"/> bytes into a new tensor (the fallback path).</summary>
    public static torch.Tensor Copy(byte* data, long byteCount, long[] shape, torch.ScalarType type)
    {
        var t = torch.empty(shape, dtype: type);
        if (byteCount > 0)
        {
            Buffer.MemoryCopy(data, (void*)DataPointer(t), byteCount, byteCount);
        }
        return t;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void OnStorageFreed(IntPtr data) => ReleaseView(data);

    static void ReleaseView(IntPtr data)
    {
        MappedShard shard;
        lock (Gate)
        {
            if (!Live.TryGetValue(data, out var entry)) return;
            shard = entry.Shard;
            if (entry.Count == 1) Live.Remove(data);
            else Live[data] = (shard, entry.Count - 1);
        }
        shard.Release();
    }

    /// <summary>Number of live zero-copy storages (for tests).</summary>
    public static int LiveViews
    {
        get { lock (Gate) return Live.Values.Sum(v => v.Count); }
    }
}
