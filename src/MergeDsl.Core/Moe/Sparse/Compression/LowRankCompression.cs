using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// The "compress" step after merging: each merged expert's matrices are replaced by their best rank-r
/// approximation in the Frobenius norm (truncated SVD, Eckart–Young): W ≈ U_r·diag(s_r)·V_rᵀ, which a
/// factored layer holds in r·(m + n) numbers instead of m·n. MC-SMoE's own compression (LoSparse) keeps a
/// sparse residual beside the low-rank part and prunes it while fine-tuning; without fine-tuning only the
/// low-rank part is done here.
/// </summary>
public static class LowRankCompression
{
    /// <summary>The rank-<paramref name="rank"/> truncation of <paramref name="w"/> [m, n] (computed in float64, returned in w's dtype); W itself when rank ≥ min(m, n).</summary>
    /// <exception cref="ArgumentException">rank &lt; 1 or a tensor that is not a matrix.</exception>
    public static Tensor Truncate(Tensor w, int rank)
    {
        if (rank < 1) throw new ArgumentException($"low rank: rank must be at least 1, got {rank}");
        if (w.dim() != 2) throw new ArgumentException($"low rank: expected a matrix, got [{string.Join(", ", w.shape)}]");
        if (rank >= Math.Min(w.shape[0], w.shape[1])) return w.clone();
        using var scope = NewDisposeScope();
        var (u, s, vh) = linalg.svd(w.detach().to_type(ScalarType.Float64).cpu(), fullMatrices: false);
        var approx = u.narrow(1, 0, rank).mul(s.narrow(0, 0, rank)).matmul(vh.narrow(0, 0, rank));
        return approx.to_type(w.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Numbers a layer of shape m × n holds when factored at <paramref name="rank"/>: r·(m + n), or m·n when that is not smaller.</summary>
    public static long FactoredSize(long m, long n, int rank) => Math.Min(m * n, (long)rank * (m + n));

    /// <summary>Every matrix of the expert truncated to <paramref name="rank"/>.</summary>
    public static ExpertWeights Compress(ExpertWeights expert, int rank)
        => new(Truncate(expert.Gate, rank), Truncate(expert.Up, rank), Truncate(expert.Down, rank));

    /// <summary>The numbers the expert holds when each matrix is factored at <paramref name="rank"/> (null: dense).</summary>
    public static long ExpertSize(ExpertWeights expert, int? rank)
    {
        long i = expert.Gate.shape[0], h = expert.Gate.shape[1];
        return rank is int r ? 3 * FactoredSize(i, h, r) : 3 * i * h;
    }
}
