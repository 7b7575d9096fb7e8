namespace MergeDsl.Core.Execution;

/// <summary>
/// Bounds the bytes in flight between two pipeline stages. One item larger than the whole budget is
/// still admitted when nothing else is in flight, so huge tensors cannot deadlock the pipeline.
/// </summary>
internal sealed class ByteBudget(long capacity)
{
    readonly object gate = new();
    long used;

    public long Peak { get; private set; }

    public void Acquire(long bytes, CancellationToken ct)
    {
        lock (gate)
        {
            while (used > 0 && used + bytes > capacity)
            {
                ct.ThrowIfCancellationRequested();
                Monitor.Wait(gate, 50);
            }
            used += bytes;
            Peak = Math.Max(Peak, used);
        }
    }

    public void Release(long bytes)
    {
        lock (gate)
        {
            used -= bytes;
            Monitor.PulseAll(gate);
        }
    }
}
