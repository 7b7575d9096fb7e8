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
    static readonly Dictionary<IntPtr, (MappedShard Shard, int Count, long Bytes)> Live = new();

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
            long bytes = shape.Aggregate((long)elementSize, (a, b) => a * b);
            Live[key] = Live.TryGetValue(key, out var entry) ? (shard, entry.Count + 1, Math.Max(bytes, entry.Bytes)) : (shard, 1, bytes);
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
        long bytes = 0;
        lock (Gate)
        {
            if (!Live.TryGetValue(data, out var entry)) return;
            shard = entry.Shard;
            if (entry.Count == 1) { Live.Remove(data); bytes = entry.Bytes; }
            else Live[data] = (shard, entry.Count - 1, entry.Bytes);
        }
        if (bytes > 0) DropPages(data, bytes);
        shard.Release();
    }

    const int MADV_DONTNEED = 4;
    static readonly long PageSize = Environment.SystemPageSize;
    static int madviseBroken;

    [DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    static extern int Madvise(IntPtr addr, nuint length, int advice);

    const int MADV_POPULATE_READ = 22; // Linux 5.14+
    const int EFAULT = 14;
    static int populateBroken;

    /// <summary>What <see cref="Populate"/> did.</summary>
    public enum PageIn
    {
        /// <summary>Every page is mapped.</summary>
        Done,
        /// <summary>The kernel or platform lacks MADV_POPULATE_READ; nothing happened that matters.</summary>
        Unsupported,
        /// <summary>Some page cannot be read (the file was truncated under the mapping): touching it would raise SIGBUS.</summary>
        Unreadable,
    }

    /// <summary>
    /// Maps the pages of [data, data + bytes) into this process (madvise MADV_POPULATE_READ) with one
    /// call instead of one fault per page. Unlike touching the pages, it reports a page past the end of
    /// a truncated file as an error (EFAULT) instead of raising SIGBUS, which would kill the process.
    /// </summary>
    public static PageIn Populate(IntPtr data, long bytes)
    {
        if (!OperatingSystem.IsLinux() || Volatile.Read(ref populateBroken) != 0) return PageIn.Unsupported;
        long start = (long)data / PageSize * PageSize;
        long end = ((long)data + bytes + PageSize - 1) / PageSize * PageSize;
        try
        {
            if (Madvise((IntPtr)start, (nuint)(end - start), MADV_POPULATE_READ) == 0) return PageIn.Done;
            if (Marshal.GetLastPInvokeError() == EFAULT) return PageIn.Unreadable;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        Volatile.Write(ref populateBroken, 1);
        return PageIn.Unsupported;
    }

    /// <summary>
    /// Takes the whole pages of a released view out of this process's resident set. The mapping is
    /// private and never written, so the pages stay in the page cache and a later access (the same
    /// tensor loaded again) reads them back from there: without this every input page the merge has
    /// read stays resident (and counts in VmHWM) until its shard is closed. Pages shared with a
    /// neighbouring tensor are left alone.
    /// </summary>
    static void DropPages(IntPtr data, long bytes)
    {
        if (!OperatingSystem.IsLinux() || Volatile.Read(ref madviseBroken) != 0) return;
        long start = ((long)data + PageSize - 1) / PageSize * PageSize;
        long end = ((long)data + bytes) / PageSize * PageSize;
        if (end <= start) return;
        try { Madvise((IntPtr)start, (nuint)(end - start), MADV_DONTNEED); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { Volatile.Write(ref madviseBroken, 1); }
    }

    /// <summary>Number of live zero-copy storages (for tests).</summary>
    public static int LiveViews
    {
        get { lock (Gate) return Live.Values.Sum(v => v.Count); }
    }
}
