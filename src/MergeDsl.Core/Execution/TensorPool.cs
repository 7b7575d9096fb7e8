using static TorchSharp.torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// Output buffers handed back by the writer and rented again for the next tensor of the same shape
/// and dtype. A fresh 64 MiB buffer is a new mmap that faults page by page on first touch (16 K faults);
/// a reused one is already resident. Only buffers rented here are kept; anything else returned is
/// disposed. Holds at most <c>maxBytes</c> of idle buffers. Thread-safe.
/// </summary>
internal sealed class TensorPool(long maxBytes) : IDisposable
{
    readonly object gate = new();
    readonly HashSet<Tensor> rented = new(ReferenceEqualityComparer.Instance);
    readonly List<Tensor> free = [];
    long freeBytes;

    static long Bytes(Tensor t) => t.numel() * t.element_size();

    /// <summary>An uninitialised CPU tensor of <paramref name="shape"/> and <paramref name="type"/>.</summary>
    public Tensor Rent(long[] shape, ScalarType type)
    {
        Tensor? t = null;
        lock (gate)
        {
            int i = free.FindIndex(f => f.dtype == type && f.shape.SequenceEqual(shape));
            if (i >= 0)
            {
                t = free[i];
                free.RemoveAt(i);
                freeBytes -= Bytes(t);
            }
        }
        // Never in the caller's dispose scope: the writer thread returns or disposes pooled buffers, and a
        // disposal from another thread would mutate that scope's set while this thread adds to it.
        t ??= empty(shape, type).DetachFromDisposeScope();
        lock (gate) rented.Add(t);
        return t;
    }

    /// <summary>Takes a tensor back for reuse when it was rented here; otherwise disposes it.</summary>
    public void Return(Tensor t)
    {
        lock (gate)
        {
            if (rented.Remove(t) && freeBytes + Bytes(t) <= maxBytes && !t.IsInvalid)
            {
                free.Add(t);
                freeBytes += Bytes(t);
                return;
            }
        }
        t.Dispose();
    }

    /// <summary>Disposes a tensor that may have been rented here but can no longer be reused (its storage is shared).</summary>
    public void Discard(Tensor t)
    {
        lock (gate) rented.Remove(t);
        t.Dispose();
    }

    /// <summary>Disposes the idle buffers.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            foreach (var t in free) t.Dispose();
            free.Clear();
            freeBytes = 0;
        }
    }
}
